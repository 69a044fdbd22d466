"""What the t2i and t2v stages share: the eps-prediction loss on pre-encoded latents, with caption dropout.

    L = E_{z_0, y, t, eps} || eps - eps_theta(z_t, t, tau(y)) ||^2   (docs/paper.md §6.1),
    tau(y) -> tau("") with probability p = cfg_dropout, for classifier-free guidance (docs/paper.md §6.2).
"""

from pathlib import Path

import torch

from minimagic.clips import latent_clips
from minimagic.diffusion import DiffusionConfig, GaussianDiffusion
from minimagic.guidance import drop_condition
from minimagic.pipeline import TextToVideoPipeline
from minimagic.text import TextEncoder
from minimagic.train import Stage
from minimagic.vae import VAE
from minimagic.videofolder import VideoFolder


class LatentDiffusionStage(Stage):
    """The denoiser's training on latent clips; subclasses set `model` and draw batches."""

    defaults = dict(steps=3000, batch_size=32, lr=5e-4, ema_decay=0.999, warmup=200, preview_every=500)
    videovae = None  # a VideoVAE to ship with the pipeline (kept from a t2v `init`)

    def __init__(self, vae: VAE | str | Path, num_clips: int, folder: VideoFolder | None, text: TextEncoder | None):
        """folder: a VideoFolder to train on (None: Moving digits); text: tau (default: MiniLM)."""
        self.vae = vae if isinstance(vae, VAE) else VAE.from_pretrained(vae)
        self.clips = latent_clips(self.vae, folder, num_clips)
        self.image_size = self.clips["latents"].shape[-1] * self.vae.config.factor  # frames are this wide
        self.preview_fps = float(self.clips["fps"].median())
        self.text = text or TextEncoder()
        self.diffusion = GaussianDiffusion(DiffusionConfig())
        captions = sorted(set(self.clips["captions"]) | set(self.clips["image_captions"]))
        with torch.no_grad():  # tau(y) of every caption once, not at every step
            self.tau = dict(zip(captions, self.text.encode(captions)[0], strict=True))  # caption -> (L, D)
            self.tau_empty = self.text.uncond(1)[0]  # (1, L, D) = tau("")

    def pipeline(self, model) -> TextToVideoPipeline:
        return TextToVideoPipeline(model, self.vae, self.text, self.diffusion, self.image_size, self.videovae)

    def contexts(self, captions: list[str], generator: torch.Generator) -> torch.Tensor:
        context = torch.stack([self.tau[caption] for caption in captions])  # (B, L, D)
        return drop_condition(context, self.tau_empty, self.diffusion.config.cfg_dropout, generator)

    def loss(self, model, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """t and eps come from `generator`: under torchrun, every rank's own (distributed.loss_generator)."""
        conditions = {name: value for name, value in batch.items() if name != "x0"}  # context (and fps)
        return self.diffusion.to(batch["x0"].device).loss(model, batch["x0"], generator, **conditions)

    def save(self, model, directory: Path, command: str, **info) -> None:
        self.pipeline(model).save_pretrained(directory, command=command, stage=self.name, **info)
