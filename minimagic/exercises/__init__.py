"""Graded exercises for the notebooks: a student writes one piece of MagicVideo, a checker grades it.

In a notebook, a stub cell defines the function (`raise NotImplementedError  # your code`) and the next cell
calls its checker, e.g. `check_q_sample(q_sample)`. The checker runs the student's function and the package
on the same seeded random inputs and prints one line: `passed`, `not attempted yet` (so the notebooks still
run top to bottom unfilled), or the first thing wrong, and returns True or False. Reference solutions are in
`minimagic/exercises/solutions.py`.
"""

from minimagic.exercises.evaluation import check_frechet_distance, check_interpolation_conditioning
from minimagic.exercises.latent import check_ddim_step, check_guidance, check_kl, check_q_sample, check_reparameterise
from minimagic.exercises.superres import check_superres_input
from minimagic.exercises.video import (
    check_causal_mask,
    check_flicker,
    check_frame_adaptor,
    check_masked_attention,
    check_temporal_residual,
)

__all__ = [
    "check_causal_mask", "check_ddim_step", "check_flicker", "check_frame_adaptor", "check_frechet_distance",
    "check_guidance", "check_interpolation_conditioning", "check_kl", "check_masked_attention", "check_q_sample",
    "check_reparameterise", "check_superres_input", "check_temporal_residual",
]
