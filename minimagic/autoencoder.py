"""The encoder and decoder networks of the frame VAE (LDM / Stable Diffusion `AutoencoderKL` layout).

Encoder: conv_in, levels of ResNet blocks with stride-2 downsampling, a mid block with self-attention, and
conv_out to the moments (mean, log-variance) of q(z|x). The decoder mirrors it with nearest-neighbour
upsampling. Module names follow diffusers, so Stable Diffusion's VAE weights load by name (vae.py).
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


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

    def __init__(self, cfg, decoder: bool):
        """`cfg` is a `vae.VAEConfig`."""
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
        if self.decoder:  # the mid block, then the up levels
            x = self.mid_block(x)
            for level in self.up_blocks:
                x = level(x)
        else:  # the down levels, then the mid block
            for level in self.down_blocks:
                x = level(x)
            x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))
