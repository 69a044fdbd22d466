"""The 2D text-to-image latent U-Net eps_theta(z_t, t, tau(y)) that MagicVideo inflates (LDM / SD v1 style).

MagicVideo reuses "all the convolution operator weights" of a pre-trained T2I U-Net [docs/paper.md §4]. Nothing
here is video-specific: video_unet.py wraps every `nn.Conv2d` with a FrameAdaptor and every
`SpatialTransformer` with a temporal branch, and adds its FPS embedding to the output of `embed_time`.
"""

from dataclasses import dataclass, fields
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from minimagic.embedding import sinusoidal_embedding
from minimagic.spatial_transformer import SpatialTransformer, group_norm

PRESETS = {
    "tiny": dict(channels=(16, 32), attention_levels=(False, True), num_heads=2, norm_groups=8),  # tests
    "toy": dict(channels=(32, 64, 128), attention_levels=(False, True, True), norm_groups=16),  # 4.6 M, CPU
    "base": dict(  # the Stable Diffusion v1 U-Net (~860 M params)
        channels=(320, 640, 1280, 1280),
        num_res_blocks=2,
        attention_levels=(True, True, True, False),
        num_heads=8,
        context_dim=768,
        norm_eps=1e-5,
        gradient_checkpointing=True,  # bench/gpu_memory.py: what it saves on one GPU
    ),
}


@dataclass
class UNetConfig:
    in_channels: int = 4  # latent channels of the VAE
    out_channels: int = 4  # eps has the latent's shape
    channels: tuple[int, ...] = (64, 128, 256)  # width per resolution level; level i works at 1/2**i
    num_res_blocks: int = 1  # ResBlocks per level going down (one more going up, as in LDM)
    attention_levels: tuple[bool, ...] = (False, True, True)  # SpatialTransformer per level; mid has one
    num_heads: int = 4
    context_dim: int = 384  # width of the text tokens tau(y) (MiniLM: 384, CLIP ViT-L: 768)
    norm_groups: int = 32  # GroupNorm groups, reduced to gcd(groups, C) for narrow layers
    time_embed_dim: int | None = None  # None -> 4 * channels[0]
    norm_eps: float = 1e-6  # eps of the ResBlocks' and the output's GroupNorm (Stable Diffusion: 1e-5)
    gradient_checkpointing: bool = False  # training: keep only block inputs, recompute the rest in backward

    def __post_init__(self):
        self.channels, self.attention_levels = tuple(self.channels), tuple(self.attention_levels)
        if not self.channels or min(self.channels) < 1 or len(self.attention_levels) != len(self.channels):
            raise ValueError(
                "need positive channels and one attention flag per level, got "
                f"channels={self.channels}, attention_levels={self.attention_levels}"
            )
        self.time_embed_dim = self.time_embed_dim or 4 * self.channels[0]
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                raise ValueError(f"UNetConfig.{f.name} must be >= 1, got {value}")
        for level, ch in enumerate(self.channels):  # the last level also feeds the mid transformer
            if (self.attention_levels[level] or level == len(self.channels) - 1) and ch % self.num_heads:
                raise ValueError(f"channels[{level}]={ch} is not divisible by num_heads={self.num_heads}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "UNetConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown UNet preset {name!r}; expected one of {sorted(PRESETS)}")
        if unknown := set(overrides) - {f.name for f in fields(cls)}:
            raise ValueError(f"unknown UNetConfig fields {sorted(unknown)}")
        return cls(**{**PRESETS[name], **overrides})


class ResBlock(nn.Module):
    """(GroupNorm, SiLU, Conv) twice with the timestep embedding added in between; 1x1 skip if C changes."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int, eps: float = 1e-6):
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_ch, groups, eps), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm2, self.conv2 = group_norm(out_ch, groups, eps), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # LDM zero-init: each block starts as its skip path
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]  # (N, C, 1, 1), broadcast over H, W
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class UNet2D(nn.Module):
    """LDM/SD U-Net. forward(x, t, ...) = forward_features(x, embed_time(t), ...), so that the video model
    can add its FPS embedding to the timestep embedding. Each block is a list of layers (`_run_layers`)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        E, G = c.time_embed_dim, c.norm_groups
        res = partial(ResBlock, emb_dim=E, groups=G, eps=c.norm_eps)
        attn = partial(SpatialTransformer, num_heads=c.num_heads, context_dim=c.context_dim, groups=G)
        self.time_embed = nn.Sequential(nn.Linear(c.channels[0], E), nn.SiLU(), nn.Linear(E, E))
        self.conv_in = nn.Conv2d(c.in_channels, c.channels[0], 3, padding=1)
        ch, skips = c.channels[0], [c.channels[0]]  # skips: channels of each saved skip connection
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        for level, out_ch in enumerate(c.channels):
            for _ in range(c.num_res_blocks):
                self.down.append(nn.ModuleList([res(ch, out_ch)]))
                if c.attention_levels[level]:
                    self.down[-1].append(attn(out_ch))
                ch = out_ch
                skips.append(ch)
            if level < len(c.channels) - 1:  # Downsample: a stride-2 conv
                self.down.append(nn.ModuleList([nn.Sequential(nn.Conv2d(ch, ch, 3, stride=2, padding=1))]))
                skips.append(ch)
        self.mid = nn.ModuleList([res(ch, ch), attn(ch), res(ch, ch)])
        for level, out_ch in reversed(list(enumerate(c.channels))):
            for i in range(c.num_res_blocks + 1):
                self.up.append(nn.ModuleList([res(ch + skips.pop(), out_ch)]))
                ch = out_ch
                if c.attention_levels[level]:
                    self.up[-1].append(attn(ch))
                if level > 0 and i == c.num_res_blocks:  # Upsample: nearest x2, then a conv
                    upsample = nn.Sequential(nn.Upsample(scale_factor=2.0), nn.Conv2d(ch, ch, 3, padding=1))
                    self.up[-1].append(upsample)
        self.norm_out = group_norm(ch, G, c.norm_eps)
        self.conv_out = nn.Conv2d(ch, c.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # LDM zero-init of the last layer
        nn.init.zeros_(self.conv_out.bias)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """Diffusion timesteps t (B,) -> embedding (B, E): sinusoidal features, then an MLP."""
        if t.ndim != 1:
            raise ValueError(f"t must be a 1-D tensor of timesteps (B,), got shape {tuple(t.shape)}")
        features = sinusoidal_embedding(t, self.config.channels[0])  # (B, C0), float32
        return self.time_embed(features.to(self.time_embed[0].weight.dtype))

    @staticmethod
    def _run_layers(layers: nn.ModuleList, h, emb, context) -> torch.Tensor:
        """A ResBlock gets the embedding, a resampling nn.Sequential only h, and every other layer (a
        SpatialTransformer, or a wrapper with its signature) gets (h, context)."""
        for layer in layers:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, nn.Sequential):
                h = layer(h)
            else:
                h = layer(h, context)
        return h

    def _run_block(self, layers: nn.ModuleList, *inputs) -> torch.Tensor:
        """One block; with gradient checkpointing (training only) its activations are recomputed in backward."""
        if self.config.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(self._run_layers, layers, *inputs, use_reentrant=False)
        return self._run_layers(layers, *inputs)

    def forward_features(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x (N, C, h, w), emb (N, E), context (N, L, D) -> eps (N, C, h, w).

        N is the batch, or B*F frames folded into the batch by the video model."""
        c, N, factor = self.config, x.shape[0], 2 ** (len(self.config.channels) - 1)
        if x.ndim != 4 or x.shape[1] != c.in_channels or x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"x must be (N, {c.in_channels}, h, w) with h and w divisible by {factor}, "
                             f"got {tuple(x.shape)}")
        if emb.shape != (N, c.time_embed_dim):
            raise ValueError(f"emb must be ({N}, {c.time_embed_dim}), got {tuple(emb.shape)}")
        if context.ndim != 3 or context.shape[0] != N or context.shape[2] != c.context_dim:
            raise ValueError(f"context must be (B={N}, L, D={c.context_dim}), got {tuple(context.shape)}")
        h = self.conv_in(x)
        skips = [h]
        for layers in self.down:
            h = self._run_block(layers, h, emb, context)
            skips.append(h)
        h = self._run_block(self.mid, h, emb, context)
        for layers in self.up:
            h = self._run_block(layers, torch.cat([h, skips.pop()], dim=1), emb, context)
        return self.conv_out(F.silu(self.norm_out(h)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x (B, C, h, w), t (B,), context (B, L, D) -> eps (B, C, h, w)."""
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"t must be ({x.shape[0]},) to match the batch of x, got {tuple(t.shape)}")
        return self.forward_features(x, self.embed_time(t), context)
