"""The autoencoder stages: the frame VAE (docs/paper.md §1) and the VideoVAE decoder (docs/paper.md §5)."""

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from minimagic import checkpoint
from minimagic.data import DATA_DIR, MovingDigits
from minimagic.latents import encode_clips
from minimagic.stage_data import MOVING_DIGITS, FolderFrames, open_folder
from minimagic.vae import VAE, VAEConfig
from minimagic.videovae import VideoVAE

VAE_CHECKPOINT = DATA_DIR / "checkpoints" / "vae-moving-digits"


class VAEStage:
    """Frames x -> q(z|x) -> x_hat; loss = |x - x_hat|^2 + kl_weight * KL(q || N(0, I)).

    Gray Moving-digit frames by default; with `data` and `data_root`, the RGB frames of a video folder's
    center clips (stage_data.py), and the preset then takes 3 input channels."""

    name = "vae"

    def __init__(self, preset: str = "toy", kl_weight: float = 1e-6, mnist_root: str | None = None,
                 data: str = MOVING_DIGITS, data_root: str | None = None, split_file: str | None = None):
        folder = open_folder(data, data_root, split_file)
        self.model = VAE(VAEConfig.preset(preset, **({} if folder is None else {"in_channels": 3})))
        self.kl_weight = kl_weight
        if folder is None:
            self.frames = MovingDigits("train", image_mode=True, length=1_000_000, mnist_root=mnist_root)
            self.held_out = MovingDigits("test", image_mode=True, length=16, mnist_root=mnist_root)
        else:  # no held-out split: the preview shows 16 (shuffled) training frames
            self.frames = FolderFrames(folder)
            self.held_out = [self.frames[i] for i in range(min(16, len(self.frames)))]

    def batch(self, batch_size: int, generator: torch.Generator) -> dict:
        index = torch.randint(len(self.frames), (batch_size,), generator=generator)
        return {"x": torch.stack([self.frames[i]["image"] for i in index.tolist()])}  # (B, 1, H, W)

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


def frame_differences(video: torch.Tensor) -> torch.Tensor:
    """x_{i+1} - x_i along the frame axis: (B, F, C, H, W) -> (B, F-1, C, H, W)."""
    return video[:, 1:] - video[:, :-1]


class VideoVAEStage:
    """Fine-tune the VideoVAE decoder on clips (encoder frozen): loss = |D(z + s eps) - x|^2 + w |dD - dx|^2,
    where d is the difference between consecutive frames: the temporal term penalises flicker. With
    `latent_noise` > 0, the decoder sees latents like a sampler's, which are off the encoder's by a residual
    error: eps ~ N(0, I) drawn anew for every frame, s ~ U(0, latent_noise) per clip. Noise that differs
    from frame to frame is what the temporal layers can average away by looking at earlier frames.
    `init` is an image VAE (a new VideoVAE is built on it) or a VideoVAE, trained further. The defaults made
    the shipped checkpoint (README): 600 steps at lr 2e-4 lowered flicker by only 10%."""

    name = "videovae"
    defaults = dict(steps=3000, batch_size=4, lr=2e-3, ema_decay=0.999, warmup=50, preview_every=500)

    def __init__(self, init: str | Path = VAE_CHECKPOINT, temporal_weight: float = 1.0, latent_noise: float = 0.0,
                 num_clips: int = 6000, **options):
        if latent_noise < 0:
            raise ValueError(f"latent_noise must be >= 0, got {latent_noise}")
        if checkpoint.load_meta(init).get("stage") == "videovae":
            if options:
                raise ValueError(f"{init} is a VideoVAE: its architecture is fixed, drop {sorted(options)}")
            self.model = VideoVAE.from_pretrained(init).train()
        else:
            self.model = VideoVAE.from_vae(VAE.from_pretrained(init), **options)
        self.temporal_weight, self.latent_noise = temporal_weight, latent_noise
        vae = self.model.vae  # its encoder is the frozen one of the image VAE
        self.latents = encode_clips(vae, "train", num_clips)["latents"]  # (N, F, c, h, w)
        self.videos = MovingDigits("train", length=num_clips, num_frames=self.latents.shape[1])
        self.held_out = MovingDigits("test", length=2, num_frames=self.latents.shape[1])

    def batch(self, batch_size: int, generator: torch.Generator) -> dict:
        index = torch.randint(len(self.videos), (batch_size,), generator=generator)
        video = torch.stack([self.videos[i]["video"] for i in index.tolist()])  # (B, F, 1, H, W)
        return {"latents": self.latents[index].float(), "video": video}

    def loss(self, model: VideoVAE, batch: dict, generator: torch.Generator) -> torch.Tensor:
        latents, video = batch["latents"], batch["video"]  # (B, F, c, h, w), (B, F, C, H, W)
        if self.latent_noise:
            scale = self.latent_noise * torch.rand(latents.shape[0], 1, 1, 1, 1, generator=generator)  # s per clip
            eps = torch.randn(latents.shape, generator=generator)  # (B, F, c, h, w), new for every frame
            latents = latents + (scale * eps).to(latents.device)
        recon = model.decode_video(latents)
        temporal = F.mse_loss(frame_differences(recon), frame_differences(video))
        return F.mse_loss(recon, video) + self.temporal_weight * temporal

    @torch.no_grad()
    def preview(self, model: VideoVAE, path: Path, generator: torch.Generator) -> None:
        """Rows: a held-out clip, its VideoVAE decoding, and |consecutive-frame differences| of that decoding."""
        device = next(model.parameters()).device
        video = torch.stack([item["video"] for item in self.held_out]).to(device)  # (2, F, 1, H, W)
        recon = model.decode_video(model.encode_video(video)).clamp(-1, 1)
        diffs = frame_differences(recon).abs() * 2 - 1  # (2, F-1, 1, H, W), shown in [-1, 1]
        diffs = torch.cat([diffs, torch.full_like(diffs[:, :1], -1)], 1)  # pad to F frames
        rows = torch.stack([video, recon, diffs], 1).flatten(0, 2)  # (2*3*F, 1, H, W)
        save_image(rows * 0.5 + 0.5, path, nrow=video.shape[1])

    def save(self, model: VideoVAE, directory: Path, command: str, **info) -> None:
        model.save_pretrained(directory, command=command, **info)
