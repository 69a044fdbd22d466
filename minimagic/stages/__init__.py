"""The training stages of minimagic, in the order MagicVideo builds them (docs/paper.md §1.1), and their registry.

vae: the frame autoencoder whose latent space everything else lives in (docs/paper.md §1);
t2i: the text-to-image latent U-Net whose 2D weights MagicVideo reuses (docs/paper.md §4);
t2v: that U-Net inflated to video with adaptors and directed temporal attention (docs/paper.md §2-3);
videovae: the VideoVAE decoder that removes frame-to-frame dithering (docs/paper.md §5);
interp: the frame interpolation model that fills in frames between keyframes (docs/paper.md §1);
continuation: a t2v model taught to continue a clip, for streaming (docs/paper.md §10);
superres: the pixel-space diffusion model that super-resolves every frame (docs/paper.md §1.1).

Each file holds one stage: a class following `train.Stage`, with an `Options` dataclass (its CLI flags).
`STAGES` below is the one list of them: the CLI's `train STAGE` and `evaluate` below read it. Adding a stage is
one new file and one line here. From Python:

    from minimagic.stages import get_stage            # or: from minimagic.stages import TextToVideoStage
    from minimagic.train import TrainConfig, train
    Stage = get_stage("t2v")
    stage = Stage(num_clips=256)                      # = Stage(Stage.Options(num_clips=256)): from the shipped t2i
    model = train(stage, TrainConfig(**{**Stage.defaults, "steps": 100}), "runs/my-t2v", overwrite=True)
    stage.save(model, "runs/my-t2v/checkpoint", command="my notebook")   # a pipeline folder
"""

import json
from pathlib import Path

import torch

from minimagic import checkpoint
from minimagic.stages.continuation import ContinuationOptions, ContinuationStage
from minimagic.stages.interp import InterpolationOptions, InterpolationStage
from minimagic.stages.superres import SuperResOptions, SuperResStage
from minimagic.stages.t2i import TextToImageOptions, TextToImageStage
from minimagic.stages.t2v import TextToVideoOptions, TextToVideoStage
from minimagic.stages.vae import VAEOptions, VAEStage
from minimagic.stages.videovae import VideoVAEOptions, VideoVAEStage

STAGES = {stage.name: stage for stage in (VAEStage, TextToImageStage, TextToVideoStage, VideoVAEStage,
                                          InterpolationStage, ContinuationStage, SuperResStage)}

__all__ = ["STAGES", "evaluate", "get_stage", "ContinuationOptions", "ContinuationStage", "InterpolationOptions",
           "InterpolationStage", "SuperResOptions", "SuperResStage", "TextToImageOptions", "TextToImageStage",
           "TextToVideoOptions", "TextToVideoStage", "VAEOptions", "VAEStage", "VideoVAEOptions", "VideoVAEStage"]


def get_stage(name: str) -> type:
    """The stage class registered as `name`."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; choose from {', '.join(STAGES)}")
    return STAGES[name]


def markdown(name: str, results: dict) -> str:
    rows = [(k, v) for k, v in results.items() if not isinstance(v, dict)]
    rows += [(f"{k} @ {sub}", v) for k, d in results.items() if isinstance(d, dict) for sub, v in d.items()]
    return "\n".join([f"| {name} | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]) + "\n"


def evaluate(directory: str | Path, out: str | Path | None = None, **options) -> dict:
    """Evaluate the checkpoint in `directory` by its stage (`Stage.evaluate`, the functions of evaluate.py);
    write `out`.json and `out`.md if given."""
    directory = Path(directory)
    stage = checkpoint.load_meta(directory)["stage"]
    if stage not in STAGES:
        raise ValueError(f"{directory} holds a '{stage}' checkpoint; evaluate knows {', '.join(STAGES)}")
    torch.manual_seed(0)
    results = {"checkpoint": str(directory), "stage": stage, **STAGES[stage].evaluate(directory, **options)}
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        base = str(out.with_suffix("")) if out.suffix in (".json", ".md") else str(out)  # keeps "t2v-guidance7.5"
        Path(f"{base}.json").write_text(json.dumps(results, indent=2) + "\n")
        Path(f"{base}.md").write_text(markdown(directory.name, results))
    return results
