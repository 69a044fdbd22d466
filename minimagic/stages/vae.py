"""Stage vae: the frame autoencoder whose latent space every later stage lives in (docs/paper.md §1)."""

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from minimagic.clips import DataOptions, FolderFrames, open_folder
from minimagic.data import MovingDigits
from minimagic.evaluate import evaluate_vae
from minimagic.train import Stage, option
from minimagic.vae import VAE, VAEConfig


@dataclass
class VAEOptions(DataOptions):
    preset: str = option("toy", "model size preset: tiny, toy (default) or base")
    kl_weight: float = option(1e-6, "weight of the KL term (per pixel)")
    mnist_root: str | None = option(None, "a folder with the full MNIST (default: the bundled 5,000 digits)")


class VAEStage(Stage):
    """Frames x -> q(z|x) -> x_hat; loss = |x - x_hat|^2 + kl_weight * KL(q || N(0, I)).

    Gray Moving-digit frames by default; with `data` and `data_root`, the RGB frames of a video folder's
    center clips (clips.py), and the preset then takes 3 input channels."""

    name, Options = "vae", VAEOptions

    def __init__(self, options: VAEOptions | None = None, **overrides):
        options = replace(options or VAEOptions(), **overrides)  # e.g. Stage(preset="tiny")
        folder = open_folder(options.data, options.data_root, options.split_file)
        self.model = VAE(VAEConfig.preset(options.preset, **({} if folder is None else {"in_channels": 3})))
        self.kl_weight = options.kl_weight
        if folder is None:
            self.frames = MovingDigits("train", image_mode=True, length=1_000_000, mnist_root=options.mnist_root)
            self.held_out = MovingDigits("test", image_mode=True, length=16, mnist_root=options.mnist_root)
        else:  # no held-out split: the preview shows 16 (shuffled) training frames
            self.frames = FolderFrames(folder)
            self.held_out = [self.frames[i] for i in range(min(16, len(self.frames)))]

    def batch(self, batch_size: int, generator: torch.Generator) -> dict:
        index = torch.randint(len(self.frames), (batch_size,), generator=generator)
        return {"x": torch.stack([self.frames[i]["image"] for i in index.tolist()])}  # (B, C, H, W)

    def loss(self, model: VAE, batch: dict, generator: torch.Generator) -> torch.Tensor:
        posterior = model.encode(batch["x"])
        recon = model.decode(posterior.sample())
        kl_per_pixel = posterior.kl().mean() / batch["x"][0].numel()  # LDM's weighting: both summed per image
        return F.mse_loss(recon, batch["x"]) + self.kl_weight * kl_per_pixel

    @torch.no_grad()
    def preview(self, model: VAE, path: Path, generator: torch.Generator) -> None:
        device = next(model.parameters()).device
        x = torch.stack([item["image"] for item in self.held_out]).to(device)  # (16, C, H, W)
        recon = model.decode(model.encode(x).mode()).clamp(-1, 1)
        save_image(torch.cat([x, recon]) * 0.5 + 0.5, path, nrow=16)

    @torch.no_grad()
    def save(self, model: VAE, directory: Path, command: str, num_frames: int = 2048, **info) -> None:
        """Set the latent scale factor to 1/std of training latents (SD's 0.18215), then save."""
        device = next(model.parameters()).device
        x = torch.stack([self.frames[i]["image"] for i in range(min(num_frames, len(self.frames)))])  # (N, C, H, W)
        generator = torch.Generator(device).manual_seed(0)  # its own: training's random streams stay untouched
        z = torch.cat([model.encode(chunk.to(device)).sample(generator) for chunk in x.split(256)])
        model.config.scale_factor = float(1.0 / z.float().std())
        model.save_pretrained(directory, command=command, **info)

    evaluate = staticmethod(evaluate_vae)  # the numbers the README reports
