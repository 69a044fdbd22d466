"""S-Attn of MagicVideo (§3.1): S-Attn(z) = CrossAttn(LN(MHSA(LN(z)))), the per-frame spatial transformer.

This is the Stable Diffusion v1 transformer block that the video model inherits from the image U-Net
[docs/paper.md §3.1, §4]: self-attention over the H*W tokens of one image, cross-attention from those tokens to
the text tokens tau(y), and a GEGLU feed-forward, each with a residual. All attention runs on the fused
`F.scaled_dot_product_attention` kernel.
"""

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def group_norm(channels: int, groups: int, eps: float = 1e-6) -> nn.GroupNorm:
    """GroupNorm with gcd(groups, channels) groups, so narrow layers never get an invalid group count."""
    return nn.GroupNorm(math.gcd(groups, channels), channels, eps=eps)


class Attention(nn.Module):
    """Multi-head attention: self-attention if `context` is None, else cross-attention to `context`."""

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim, bias=False)  # K and V in one GEMM
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, T, C), context (N, L, D) -> (N, T, C)."""
        k, v = self.to_kv(x if context is None else context).chunk(2, dim=-1)
        q, k, v = (rearrange(a, "n t (h d) -> n h t d", h=self.num_heads) for a in (self.to_q(x), k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # (N, heads, T, d)
        return self.to_out(rearrange(out, "n h t d -> n t (h d)"))


class BasicTransformerBlock(nn.Module):
    """LN + self-attention (MHSA), LN + cross-attention to tau(y), LN + GEGLU FFN; each one residual."""

    def __init__(self, dim: int, num_heads: int, context_dim: int):
        super().__init__()
        self.norm1, self.attn1 = nn.LayerNorm(dim), Attention(dim, num_heads)
        self.norm2, self.attn2 = nn.LayerNorm(dim), Attention(dim, num_heads, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff_in = nn.Linear(dim, 8 * dim)  # GEGLU: value and gate, 4*dim each
        self.ff_out = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        value, gate = self.ff_in(self.norm3(x)).chunk(2, dim=-1)
        return x + self.ff_out(value * F.gelu(gate))


class SpatialTransformer(nn.Module):
    """The U-Net's attention block: x + proj_out(Block(proj_in(GroupNorm(x)), tau(y))), per image.

    The video model wraps every instance of this class with a temporal branch, so its forward signature
    `(x, context)` is part of the contract with video_unet.py.
    """

    def __init__(self, channels: int, num_heads: int, context_dim: int, groups: int):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.proj_in = nn.Conv2d(channels, channels, 1)  # SD v1 uses 1x1 convs here, so they get adaptors
        self.block = BasicTransformerBlock(channels, num_heads, context_dim)
        self.proj_out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)  # LDM zero-init: the block starts as the identity
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W), context (N, L, D) -> (N, C, H, W)."""
        h = rearrange(self.proj_in(self.norm(x)), "n c h w -> n (h w) c")
        h = rearrange(self.block(h, context), "n (h w) c -> n c h w", h=x.shape[2])
        return x + self.proj_out(h)
