"""MagicVideo's third stage (docs/paper.md §1.1): pixel-space diffusion super-resolution of every frame (SR3 style).

The denoiser sees the noisy high-resolution frame x_t concatenated with the low-resolution frame y upsampled
bicubically to the same size, and predicts v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (or eps, as its diffusion
config says; `pixel_diffusion_config` explains the choice):

    v_theta([x_t ; up(y)], t),   x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps   (docs/paper.md §6.1).

The network is minimagic's `UNet2D` with 2C input channels, C output channels and no text: its cross-attention
(only in the middle block, at the lowest resolution) attends to one fixed zero token, so it reduces to a learned
bias. A video (B, F, C, h, w) is upscaled frame by frame (the B*F frames in one batch) with deterministic DDIM.
Independent x_T per frame lets the invented detail change from frame to frame (flicker); `shared_noise=True`
draws one x_T per clip and gives it to all its frames, so the same pixel starts from the same noise in every frame.
"""

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minimagic import checkpoint
from minimagic.diffusion import DiffusionConfig, GaussianDiffusion
from minimagic.unet import UNet2D, UNetConfig

SCALE = 2  # the one factor this stage learns: 32 -> 64 in training, 64 -> 128 in the pipeline
PRESETS = {
    "tiny": dict(channels=(16, 32), num_heads=2, norm_groups=8),  # tests
    "toy": dict(channels=(16, 32, 64), norm_groups=8),  # CPU: the shipped checkpoint
    "base": dict(channels=(64, 128, 256, 512), num_res_blocks=2, norm_groups=32),  # one GPU
}
NULL_CONTEXT_DIM = 8  # width of the single zero "text" token the U-Net's cross-attention reads


def pixel_diffusion_config() -> DiffusionConfig:
    """DDPM's linear schedule in pixel space (beta 1e-4 .. 0.02, as SR3) with the v target: at abar_T ~ 4e-5 an eps
    error is multiplied by sqrt((1 - abar) / abar) ~ 150 in the x_0 estimate, which few DDIM steps cannot undo; v
    predicts x_0 itself there. No captions, so no caption dropout."""
    return DiffusionConfig(schedule="linear", beta_start=1e-4, beta_end=0.02, prediction="v", cfg_dropout=0.0)


@dataclass
class SuperResConfig:
    image_channels: int = 1  # C of the frames (Moving digits: gray)
    channels: tuple[int, ...] = (16, 32, 64)  # U-Net width per level; level i works at 1/2**i of the output
    num_res_blocks: int = 1
    num_heads: int = 4  # heads of the middle block's self-attention
    norm_groups: int = 8

    def __post_init__(self):
        self.channels = tuple(self.channels)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and value < 1:
                raise ValueError(f"SuperResConfig.{f.name} must be >= 1, got {value}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "SuperResConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown super-resolution preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def unet_config(self) -> UNetConfig:
        C = self.image_channels
        return UNetConfig(in_channels=2 * C, out_channels=C, channels=self.channels,
                          num_res_blocks=self.num_res_blocks, attention_levels=(False,) * len(self.channels),
                          num_heads=self.num_heads, context_dim=NULL_CONTEXT_DIM, norm_groups=self.norm_groups)


def downsample(frames: torch.Tensor) -> torch.Tensor:
    """High-resolution frames (N, C, H, W) -> (N, C, H/2, W/2) by 2x2 averaging: the low-resolution input."""
    return F.avg_pool2d(frames, SCALE)


def upsample(frames: torch.Tensor) -> torch.Tensor:
    """Low-resolution frames (N, C, h, w) -> (N, C, 2h, 2w) bicubic, clamped to [-1, 1]: the baseline and the
    condition."""
    return F.interpolate(frames, scale_factor=SCALE, mode="bicubic", align_corners=False).clamp(-1, 1)


class SuperResolution(nn.Module):
    """v_theta([x_t ; up(y)], t): the SR3 denoiser on UNet2D, its loss and its per-frame DDIM sampler."""

    def __init__(self, config: SuperResConfig | None = None, diffusion: GaussianDiffusion | None = None):
        super().__init__()
        self.config = config or SuperResConfig()
        self.unet = UNet2D(self.config.unet_config())
        self.diffusion = diffusion or GaussianDiffusion(pixel_diffusion_config())
        self.register_buffer("null_context", torch.zeros(1, 1, NULL_CONTEXT_DIM), persistent=False)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, low_res_up: torch.Tensor) -> torch.Tensor:
        """x_t, low_res_up (N, C, H, W), t (N,) -> v (or eps) (N, C, H, W)."""
        if low_res_up.shape != x_t.shape:
            raise ValueError(f"the upsampled condition {tuple(low_res_up.shape)} must have x_t's shape "
                             f"{tuple(x_t.shape)}")
        context = self.null_context.expand(x_t.shape[0], -1, -1)  # (N, 1, D): no text
        return self.unet(torch.cat([x_t, low_res_up], dim=1), t, context)  # in: (N, 2C, H, W)

    def _check_frames(self, frames: torch.Tensor, name: str) -> None:
        C, factor = self.config.image_channels, 2 ** (len(self.config.channels) - 1)
        if frames.ndim != 4 or frames.shape[1] != C or frames.shape[2] % factor or frames.shape[3] % factor:
            raise ValueError(f"{name} must be frames (N, {C}, H, W) with H and W divisible by {factor}, "
                             f"got {tuple(frames.shape)}")

    def loss(self, high_res: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ground-truth frames (N, C, H, W) -> their 2x2 average y -> || v - v_theta([x_t ; up(y)], t) ||^2."""
        self._check_frames(high_res, "high_res")
        condition = upsample(downsample(high_res))  # (N, C, H, W)
        return self.diffusion.to(high_res.device).loss(self, high_res, generator, low_res_up=condition)

    @torch.no_grad()
    def upscale(self, video: torch.Tensor, num_inference_steps: int = 10, shared_noise: bool = True,
                generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Low-resolution video (B, F, C, h, w) in [-1, 1] -> (B, F, C, 2h, 2w), every frame by DDIM (eta = 0);
        10 steps and shared noise are the settings chosen on validation seed 2 (docs/results/superres.md).

        x_T: `noise` (B, F, C, 2h, 2w) if given, else N(0, I) drawn once per clip (`shared_noise`) or per frame."""
        if video.ndim != 5:
            raise ValueError(f"video must be (B, F, C, h, w), got {tuple(video.shape)}")
        B, num_frames, C, h, w = video.shape
        frames = rearrange(video, "b f c h w -> (b f) c h w")
        self._check_frames(upsample(frames), f"the upsampled frames of video {tuple(video.shape)}")
        condition = upsample(frames)  # (B*F, C, 2h, 2w)
        device, shape = condition.device, (B, num_frames, C, SCALE * h, SCALE * w)
        if noise is None:
            draw = generator.device if generator is not None else device
            per_clip = torch.randn((B, 1 if shared_noise else num_frames, *shape[2:]), generator=generator,
                                   device=draw).to(device)
            noise = per_clip.expand(shape)  # (B, F, C, 2h, 2w)
        if noise.shape != shape:
            raise ValueError(f"noise must be {shape}, got {tuple(noise.shape)}")

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self(x_t, t, condition)

        x_T = rearrange(noise, "b f c h w -> (b f) c h w")
        out = self.diffusion.to(device).sample(denoise, tuple(x_T.shape), num_inference_steps, device=device,
                                               x_T=x_T)
        return rearrange(out.clamp(-1, 1), "(b f) c h w -> b f c h w", b=B)

    def save_pretrained(self, directory: str | Path, **info) -> Path:
        config = {"superres": asdict(self.config), "diffusion": asdict(self.diffusion.config)}
        return checkpoint.save_checkpoint(directory, self.state_dict(), "superres", config, **info)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "SuperResolution":
        config = checkpoint.load_meta(directory, "superres")["config"]
        if not {"superres", "diffusion"} <= set(config):
            raise ValueError(f"{Path(directory) / checkpoint.CONFIG} needs 'superres' and 'diffusion' configs")
        model = cls(SuperResConfig(**config["superres"]), GaussianDiffusion(DiffusionConfig(**config["diffusion"])))
        return checkpoint.load_weights(model, directory).eval()

