"""Stage interp: the FrameInterpolator (interpolation.py, docs/paper.md §1) on Moving-digit clips.

`python -m minimagic train interp --preset toy` starts from the shipped text-to-video model, so the
interpolator begins as the keyframe denoiser, and learns to fill in k frames between two known ones.
`--init` an interp checkpoint instead trains that interpolator further.
"""

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torchvision.utils import save_image

from minimagic import checkpoint
from minimagic.data import MovingDigits
from minimagic.diffusion import DiffusionConfig, GaussianDiffusion
from minimagic.evaluate import evaluate_interp
from minimagic.guidance import drop_condition
from minimagic.interpolation import FrameInterpolator
from minimagic.paths import T2V_CHECKPOINT, VAE_CHECKPOINT
from minimagic.pipeline import TextToVideoPipeline
from minimagic.pipeline_folder import load_pipeline, save_pipeline
from minimagic.text import TextEncoder
from minimagic.train import Stage, option
from minimagic.unet import UNet2D, UNetConfig
from minimagic.vae import VAE
from minimagic.video_unet import VideoUNet

CLIPS = 10**6  # indices to draw clips from: MovingDigits is procedural, every index is a clip of its own


@dataclass
class InterpolationOptions:
    preset: str = option("toy", "model size preset when training from scratch (--init none): tiny, toy or base")
    init: str | None = option(str(T2V_CHECKPOINT), "the t2v pipeline to start from, an interp checkpoint to train "
                              "further (its max_between kept), or none: a fresh U-Net on the shipped VAE")
    max_between: int = option(3, "the most in-between frames k the interpolator learns to fill")


class InterpolationStage(Stage):
    """The FrameInterpolator on clips of k + 2 frames (k in 1..max_between drawn per batch) whose digit moves
    `gap` pixels from the first to the last frame: 3 px is two consecutive t2v keyframes."""

    name, Options = "interp", InterpolationOptions
    defaults = dict(steps=3000, batch_size=8, lr=2e-4, ema_decay=0.999, warmup=100, preview_every=500)
    gaps = (3.0, 6.0, 12.0)  # pixels the digit travels between the two keyframes

    def __init__(self, options: InterpolationOptions | None = None, **overrides):
        options = replace(options or InterpolationOptions(), **overrides)  # e.g. Stage(preset="tiny")
        init, max_between = options.init, options.max_between
        UNetConfig.preset(options.preset)  # an unknown preset fails now, before any model loads
        self.image_size = 64  # Moving-digit frames
        if init is not None and checkpoint.load_meta(init)["stage"] == "interp":
            parts = load_pipeline(init, ("interp",))
            self.model = FrameInterpolator.from_pretrained(init)
            self.vae, self.text, self.diffusion = parts.vae, parts.text_encoder, self.model.diffusion
            self.use_data(self.model.max_between)
            return
        keyframe = TextToVideoPipeline.from_pretrained(init) if init is not None else None
        if keyframe is not None and not keyframe.is_video:
            raise ValueError(f"{init} holds a text-to-image model; the interp stage starts from a t2v checkpoint")
        self.vae = keyframe.vae if keyframe else VAE.from_pretrained(VAE_CHECKPOINT)
        self.text = keyframe.text_encoder if keyframe else TextEncoder()
        self.diffusion = keyframe.diffusion if keyframe else GaussianDiffusion(DiffusionConfig())
        if keyframe is not None:
            unet = keyframe.unet
        else:  # no image or video pre-training
            c = self.vae.config.latent_channels
            image_unet = UNet2D(UNetConfig.preset(options.preset, in_channels=c, out_channels=c,
                                                  context_dim=self.text.dim))
            unet = VideoUNet.from_unet2d(image_unet, max_between + 2)
        if max_between + 2 > unet.num_frames:
            raise ValueError(f"max_between={max_between} needs {max_between + 2} frames, not {unet.num_frames}")
        self.model = FrameInterpolator.from_keyframe_model(unet, self.diffusion, max_between)
        self.use_data(max_between)

    def use_data(self, max_between: int) -> None:
        """Clips of k + 2 frames for every k <= max_between and every gap."""
        self.max_between = max_between
        self.data = {(k, gap): MovingDigits("train", num_frames=k + 2, speed=gap / (k + 1), length=CLIPS)
                     for k in range(1, max_between + 1) for gap in self.gaps}

    def batch(self, batch_size: int, generator: torch.Generator) -> dict:
        k = int(torch.randint(1, self.max_between + 1, (1,), generator=generator))
        data = self.data[k, self.gaps[int(torch.randint(len(self.gaps), (1,), generator=generator))]]
        items = [data[i] for i in torch.randint(len(data), (batch_size,), generator=generator).tolist()]
        with torch.no_grad():
            x0 = self.vae.encode_video(torch.stack([item["video"] for item in items]))  # (B, k + 2, c, h, w)
        context, _ = self.text.encode([item["caption"] for item in items])  # (B, L, D)
        context = drop_condition(context, self.text.uncond(1)[0], self.diffusion.config.cfg_dropout, generator)
        return {"x0": x0, "context": context}

    def loss(self, model: FrameInterpolator, batch: dict, generator: torch.Generator) -> torch.Tensor:
        return model.loss(batch["x0"], batch["context"], generator)

    @torch.no_grad()
    def preview(self, model: FrameInterpolator, path: Path, generator: torch.Generator) -> None:
        """Rows in pairs: a clip of the largest gap, then its interpolation from the first and last frame."""
        k, data, device = self.max_between, self.data[self.max_between, self.gaps[-1]], next(model.parameters()).device
        video = torch.stack([data[i]["video"] for i in range(4)])  # (4, k + 2, 1, H, W)
        context, _ = self.text.encode([data[i]["caption"] for i in range(4)])
        keyframes = self.vae.encode_video(video[:, [0, -1]]).to(device)  # (4, 2, c, h, w)
        latents = model.interpolate(keyframes, k, context.to(device), generator=torch.Generator().manual_seed(0))
        frames = self.vae.decode_video(latents.cpu()).clamp(-1, 1)  # (4, k + 2, 1, H, W)
        save_image(torch.cat([video, frames], dim=1).flatten(0, 1) * 0.5 + 0.5, path, nrow=k + 2)

    def save(self, model: FrameInterpolator, directory: Path, command: str, **info) -> None:
        model_config = {"video_unet": model.unet.config_dict(), "max_between": model.max_between}
        save_pipeline(directory, "interp", model, model_config, model.diffusion, self.text, self.vae,
                      self.image_size, command=command, **info)

    evaluate = staticmethod(evaluate_interp)  # the numbers the README reports
