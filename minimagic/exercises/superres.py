"""Checker for the exercise of notebook 12 (super-resolution): the SR3 input [x_t ; up(y)], graded against
superres.py (see grading.py)."""

from collections.abc import Callable

import torch
import torch.nn.functional as F

from minimagic.exercises.grading import Fault, grade, named
from minimagic.superres import upsample


def check_superres_input(student: Callable) -> bool:
    """superres_input(x_t (N, C, H, W), low_res (N, C, H/2, W/2)) -> (N, 2C, H, W): the noisy frame, then the
    low-resolution frame upsampled bicubically and clamped to [-1, 1], concatenated along the channels."""
    g = torch.Generator().manual_seed(0)
    trials = [{"x_t": torch.randn(n, c, 2 * h, 2 * w, generator=g),
               "low_res": torch.rand(n, c, h, w, generator=g) * 2 - 1}  # random pixels: bicubic overshoots
              for n, c, h, w in [(2, 1, 8, 8), (1, 3, 6, 10), (3, 1, 5, 7)]]

    def package(x_t, low_res):
        return torch.cat([x_t, upsample(low_res)], dim=1)

    def resized(x_t, low_res, clamp=True, **mode):
        up = F.interpolate(low_res, scale_factor=2, **mode)
        return torch.cat([x_t, up.clamp(-1, 1) if clamp else up], dim=1)

    faults = [
        Fault("channels in the wrong order: x_t first, then the upsampled condition (as superres.py's U-Net expects)",
              lambda x_t, low_res: torch.cat([upsample(low_res), x_t], dim=1)),
        Fault("nearest-neighbour upsampling: the condition is upsampled bicubically (mode='bicubic')",
              lambda x_t, low_res: resized(x_t, low_res, mode="nearest")),
        Fault("bilinear upsampling: the condition is upsampled bicubically (mode='bicubic')",
              lambda x_t, low_res: resized(x_t, low_res, mode="bilinear", align_corners=False)),
        Fault("align_corners=True: pixel centres must stay aligned as in F.interpolate's default (False)",
              lambda x_t, low_res: resized(x_t, low_res, mode="bicubic", align_corners=True)),
        Fault("not clamped: bicubic overshoots beyond [-1, 1] next to sharp edges; clamp it to the pixel range",
              lambda x_t, low_res: resized(x_t, low_res, clamp=False, mode="bicubic", align_corners=False)),
    ]
    return grade(named(student, "superres_input"), student, package, trials, faults)
