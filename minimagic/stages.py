"""The training stages of minimagic, in the order MagicVideo builds them.

vae: the frame autoencoder whose latent space everything else lives in (digest §1);
t2i: the text-to-image latent U-Net whose 2D weights MagicVideo reuses (digest §4);
t2v: that U-Net inflated to video with adaptors and directed temporal attention (digest §2-3).
Each stage gives `train.train` a model, batches, a loss, a preview and a `save`.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from minimagic.data import MovingDigits
from minimagic.vae import VAE, VAEConfig


class VAEStage:
    """Frames x -> q(z|x) -> x_hat; loss = |x - x_hat|_1 + kl_weight * KL(q || N(0, I))."""

    name = "vae"

    def __init__(self, preset: str = "toy", kl_weight: float = 1e-6, mnist_root: str | None = None):
        self.model = VAE(VAEConfig.preset(preset))
        self.kl_weight = kl_weight
        self.frames = MovingDigits("train", image_mode=True, length=1_000_000, mnist_root=mnist_root)
        self.held_out = MovingDigits("test", image_mode=True, length=16, mnist_root=mnist_root)

    def batch(self, batch_size: int, generator: torch.Generator) -> dict:
        index = torch.randint(len(self.frames), (batch_size,), generator=generator)
        return {"x": torch.stack([self.frames[i]["image"] for i in index.tolist()])}  # (B, 1, H, W)

    def loss(self, model: VAE, batch: dict, generator: torch.Generator) -> torch.Tensor:
        posterior = model.encode(batch["x"])
        recon = model.decode(posterior.sample())
        return F.l1_loss(recon, batch["x"]) + self.kl_weight * posterior.kl().mean()

    @torch.no_grad()
    def preview(self, model: VAE, path: Path, generator: torch.Generator) -> None:
        device = next(model.parameters()).device
        x = torch.stack([item["image"] for item in self.held_out]).to(device)  # (16, 1, H, W)
        recon = model.decode(model.encode(x).mode()).clamp(-1, 1)
        save_image(torch.cat([x, recon]) * 0.5 + 0.5, path, nrow=16)

    @torch.no_grad()
    def save(self, model: VAE, directory: Path, command: str, num_frames: int = 2048) -> None:
        """Set the latent scale factor to 1/std of training latents (SD's 0.18215), then save."""
        device = next(model.parameters()).device
        x = torch.stack([self.frames[i]["image"] for i in range(num_frames)])  # (N, 1, H, W)
        z = torch.cat([model.encode(chunk.to(device)).sample() for chunk in x.split(256)])
        model.config.scale_factor = float(1.0 / z.float().std())
        model.save_pretrained(directory, command=command)


STAGES = {"vae": VAEStage}
