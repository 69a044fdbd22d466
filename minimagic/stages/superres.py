"""Stage superres: the super-resolution diffusion model (superres.py, docs/paper.md §1.1) on Moving-digit frames.

Ground truth exists offline only at the canvas size: the model learns 32x32 -> 64x64 from real 64x64 frames and
their 2x2 averages. `python -m minimagic train superres --preset toy --out data/checkpoints/superres-moving-digits`
makes the shipped checkpoint; `evaluate` scores held-out clips against bicubic upsampling.
"""

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torchvision.utils import save_image

from minimagic.data import MovingDigits
from minimagic.metrics import DigitClassifier, flicker, psnr, video_scores
from minimagic.superres import SuperResConfig, SuperResolution, downsample, upsample
from minimagic.train import Stage, option

FRAMES = 10**6  # indices to draw frames from: MovingDigits is procedural, every index is a frame of its own


@dataclass
class SuperResOptions:
    preset: str = option("toy", "model size preset: tiny, toy (default) or base")


class SuperResStage(Stage):
    """The SR3-style denoiser v_theta([x_t ; bicubic(y)], t) on single 64x64 frames and their 32x32 averages."""

    name, Options = "superres", SuperResOptions
    defaults = dict(steps=2500, batch_size=8, lr=5e-4, ema_decay=0.999, warmup=100, preview_every=500)

    def __init__(self, options: SuperResOptions | None = None, **overrides):
        options = replace(options or SuperResOptions(), **overrides)  # e.g. Stage(preset="tiny")
        self.model = SuperResolution(SuperResConfig.preset(options.preset))
        self.frames = MovingDigits("train", image_mode=True, length=FRAMES)
        self.held_out = MovingDigits("test", image_mode=True, length=4)

    def batch(self, batch_size: int, generator: torch.Generator) -> dict:
        index = torch.randint(len(self.frames), (batch_size,), generator=generator)
        return {"high_res": torch.stack([self.frames[i]["image"] for i in index.tolist()])}  # (B, 1, 64, 64)

    def loss(self, model: SuperResolution, batch: dict, generator: torch.Generator) -> torch.Tensor:
        return model.loss(batch["high_res"], generator)

    @torch.no_grad()
    def preview(self, model: SuperResolution, path: Path, generator: torch.Generator) -> None:
        """Rows: bicubic from 32x32, the model's 64x64 (10 DDIM steps), the truth."""
        device = next(model.parameters()).device
        truth = torch.stack([item["image"] for item in self.held_out]).to(device)  # (4, 1, 64, 64)
        low_res = downsample(truth)  # (4, 1, 32, 32)
        sr = model.upscale(low_res[:, None], 10, generator=torch.Generator().manual_seed(0))[:, 0]  # (4, 1, 64, 64)
        save_image(torch.cat([upsample(low_res), sr, truth]) * 0.5 + 0.5, path, nrow=4)

    def save(self, model: SuperResolution, directory: Path, command: str, **info) -> None:
        model.save_pretrained(directory, command=command, **info)

    @staticmethod
    def evaluate(directory: Path, num_videos: int = 100, seed: int = 1, steps: int = 10, **_) -> dict:
        return evaluate_superres(directory, num_videos, seed, steps)


@torch.no_grad()
def evaluate_superres(directory: Path, num_videos: int = 100, seed: int = 1, steps: int = 10,
                      batch_clips: int = 25) -> dict:
    """Held-out clips (test digits, `seed`) downsampled 64 -> 32, then back to 64 by bicubic and by the model with
    x_T shared across a clip's frames or drawn per frame: PSNR against the truth, the digit classifier's accuracy
    and flicker (metrics.py) of each."""
    model, classifier = SuperResolution.from_pretrained(directory), DigitClassifier.from_pretrained()
    data = MovingDigits("test", length=num_videos, seed=seed)
    items = [data[i] for i in range(num_videos)]
    truth = torch.stack([item["video"] for item in items])  # (N, F, 1, 64, 64)
    captions = [item["caption"] for item in items]
    low_res = downsample(truth.flatten(0, 1)).unflatten(0, truth.shape[:2])  # (N, F, 1, 32, 32)
    candidates = {"bicubic": upsample(low_res.flatten(0, 1)).unflatten(0, truth.shape[:2])}  # (B, F, C, H, W)
    for name, shared in (("sr_shared_noise", True), ("sr_independent_noise", False)):
        generator = torch.Generator().manual_seed(seed)
        candidates[name] = torch.cat([model.upscale(clips, steps, shared, generator)
                                      for clips in low_res.split(batch_clips)])  # (N, F, 1, 64, 64)
    results = {"held_out_clips": num_videos, "frames_per_clip": truth.shape[1], "ddim_steps": steps}
    for name, video in candidates.items():
        results[name] = {"psnr_db": round(psnr(video.flatten(0, 1), truth.flatten(0, 1))[1], 2),
                         "digit_accuracy": round(video_scores(video, captions, classifier)["digit_accuracy"], 4),
                         "flicker": round(flicker(video, truth), 4)}
    results["truth_digit_accuracy"] = round(video_scores(truth, captions, classifier)["digit_accuracy"], 4)
    return results
