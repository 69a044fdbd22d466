"""The latent space of MagicVideo: a KL-regularised autoencoder, z = E(x), x ≈ D(z) (LDM's AutoencoderKL).

MagicVideo encodes every frame with Stable Diffusion's VAE, z_t = [E(x^1), ..., E(x^F)], and runs
diffusion on those latents (digest §1). Module names mirror diffusers' `AutoencoderKL`, so a Stable
Diffusion VAE checkpoint loads with `VAE.from_diffusers` after a few renames.
"""

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minimagic import checkpoint

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


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=1e-6)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=1e-6)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return h + (x if self.conv_shortcut is None else self.conv_shortcut(x))


class Attention(nn.Module):
    """Single-head self-attention over the h*w positions of the mid block."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        tokens = rearrange(self.group_norm(x), "b c h w -> b (h w) c")
        out = F.scaled_dot_product_attention(self.to_q(tokens), self.to_k(tokens), self.to_v(tokens))
        return x + rearrange(self.to_out[0](out), "b (h w) c -> b c h w", h=h, w=w)


class MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups) for _ in range(2)])
        self.attentions = nn.ModuleList([Attention(channels, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Sampler(nn.Module):
    """A stride-2 conv (down, padded right/bottom like diffusers) or nearest-2x + conv (up)."""

    def __init__(self, channels: int, up: bool):
        super().__init__()
        self.up = up
        self.conv = nn.Conv2d(channels, channels, 3, stride=1 if up else 2, padding=1 if up else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest") if self.up else F.pad(x, (0, 1, 0, 1)))


class Level(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, sampler: str | None):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups) for i in range(num_layers)]
        )
        if sampler:  # diffusers' names: `downsamplers` in the encoder, `upsamplers` in the decoder
            setattr(self, f"{sampler}samplers", nn.ModuleList([Sampler(out_channels, up=sampler == "up")]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resnets:
            x = block(x)
        for name in ("downsamplers", "upsamplers"):
            for sampler in getattr(self, name, ()):
                x = sampler(x)
        return x


class Coder(nn.Module):
    """Encoder (x -> moments of q(z|x)) or decoder (z -> x): conv_in, levels, mid block, conv_out."""

    def __init__(self, cfg: VAEConfig, decoder: bool):
        super().__init__()
        chans, g, n = cfg.channels, cfg.norm_groups, len(cfg.channels)
        self.decoder = decoder
        if decoder:
            self.conv_in = nn.Conv2d(cfg.latent_channels, chans[-1], 3, padding=1)
            rev = chans[::-1]
            self.up_blocks = nn.ModuleList(Level(rev[max(i - 1, 0)], rev[i], cfg.layers_per_block + 1, g,
                                                 "up" if i < n - 1 else None) for i in range(n))
            out_in, out_channels = chans[0], cfg.in_channels
        else:
            self.conv_in = nn.Conv2d(cfg.in_channels, chans[0], 3, padding=1)
            self.down_blocks = nn.ModuleList(Level(chans[max(i - 1, 0)], chans[i], cfg.layers_per_block, g,
                                                   "down" if i < n - 1 else None) for i in range(n))
            out_in, out_channels = chans[-1], 2 * cfg.latent_channels
        self.mid_block = MidBlock(chans[-1], g)
        self.conv_norm_out = nn.GroupNorm(g, out_in, eps=1e-6)
        self.conv_out = nn.Conv2d(out_in, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        if self.decoder:
            x = self.mid_block(x)
        for level in self.up_blocks if self.decoder else self.down_blocks:
            x = level(x)
        if not self.decoder:
            x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


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
        missing, unexpected = vae.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"not a diffusers AutoencoderKL state dict for this config: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        return vae.eval()
