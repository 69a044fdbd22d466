"""The latent space of MagicVideo: a KL-regularised autoencoder, z = E(x), x ≈ D(z) (LDM's AutoencoderKL).

MagicVideo encodes every frame with Stable Diffusion's VAE, z_t = [E(x^1), ..., E(x^F)], and runs
diffusion on those latents (docs/paper.md §1). Module names mirror diffusers' `AutoencoderKL`, so a Stable
Diffusion VAE checkpoint loads with `VAE.from_diffusers` after a few renames.
"""

from dataclasses import asdict, dataclass

import torch
from einops import rearrange
from torch import nn

from minimagic import checkpoint
from minimagic.autoencoder import Coder

PRESETS = {
    "tiny": dict(in_channels=1, channels=(8, 16), layers_per_block=1, norm_groups=4),
    "toy": dict(in_channels=1, channels=(16, 32, 64), layers_per_block=1, norm_groups=8),
    "sd": dict(in_channels=3, channels=(128, 256, 512, 512), layers_per_block=2, norm_groups=32),
}


@dataclass
class VAEConfig:
    in_channels: int = 1
    latent_channels: int = 4
    channels: tuple[int, ...] = (16, 32, 64)  # one level per entry; downsampling factor 2**(levels-1)
    layers_per_block: int = 1
    norm_groups: int = 8
    scale_factor: float = 1.0  # 1/std of training latents (SD: 0.18215); set after training

    def __post_init__(self):
        self.channels = tuple(self.channels)
        if any(c % self.norm_groups for c in self.channels):
            raise ValueError(f"every channel count {self.channels} must divide by norm_groups={self.norm_groups}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "VAEConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown VAE preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def factor(self) -> int:
        return 2 ** (len(self.channels) - 1)


class DiagonalGaussian:
    """The posterior q(z|x) = N(mean, diag(exp(logvar))) that the encoder outputs."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample: 0.5 * sum(mean^2 + var - 1 - logvar)."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


class VAE(nn.Module):
    """Frame autoencoder: (B, C, H, W) <-> (B, c, H/f, W/f); videos go frame by frame."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder, self.decoder = Coder(config, decoder=False), Coder(config, decoder=True)
        self.quant_conv = nn.Conv2d(2 * config.latent_channels, 2 * config.latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(config.latent_channels, config.latent_channels, 1)

    def _check(self, x: torch.Tensor, channels: int, factor: int, what: str) -> None:
        if x.ndim != 4 or x.shape[1] != channels or x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"VAE {what} expects (B, {channels}, H, W) with H, W divisible by {factor}, "
                             f"got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        self._check(x, self.config.in_channels, self.config.factor, "encode")
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self._check(z, self.config.latent_channels, 1, "decode")
        return self.decoder(self.post_quant_conv(z))

    def encode_video(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, F, C, H, W) in [-1, 1] -> scaled latents (B, F, c, h, w): the posterior mean times
        `scale_factor` (a sample of the posterior when a generator is given)."""
        b = video.shape[0]
        posterior = self.encode(rearrange(video, "b f c h w -> (b f) c h w"))
        z = posterior.mode() if generator is None else posterior.sample(generator)
        return rearrange(z * self.config.scale_factor, "(b f) c h w -> b f c h w", b=b)

    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, F, c, h, w) -> video (B, F, C, H, W), each frame decoded on its own."""
        b = latents.shape[0]
        frames = self.decode(rearrange(latents / self.config.scale_factor, "b f c h w -> (b f) c h w"))
        return rearrange(frames, "(b f) c h w -> b f c h w", b=b)

    def save_pretrained(self, directory, **info) -> None:
        checkpoint.save_checkpoint(directory, self.state_dict(), "vae", asdict(self.config), **info)

    @classmethod
    def from_pretrained(cls, directory) -> "VAE":
        vae = cls(VAEConfig(**checkpoint.load_meta(directory, "vae")["config"]))
        return checkpoint.load_weights(vae, directory).eval()

    @classmethod
    def from_diffusers(cls, path_or_state_dict, **overrides) -> "VAE":
        """A Stable Diffusion VAE in diffusers' `AutoencoderKL` format (a `.safetensors` file or a
        state dict) as the `sd` preset; old attention names (query/key/value/proj_attn) are renamed."""
        state = path_or_state_dict
        if not isinstance(state, dict):
            state = checkpoint.load_state_dict(path_or_state_dict)
        renames = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}
        for old, new in renames.items():
            state = {k.replace(old, new): v for k, v in state.items()}
        vae = cls(VAEConfig.preset("sd", **{"scale_factor": 0.18215, **overrides}))
        try:
            missing, unexpected = vae.load_state_dict(state, strict=False)
        except RuntimeError as error:  # tensors of other shapes: another configuration
            raise ValueError(f"not a diffusers AutoencoderKL state dict for this config: {str(error)[:300]}") from None
        if missing or unexpected:
            raise ValueError(f"not a diffusers AutoencoderKL state dict for this config: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        return vae.eval()
