"""MagicVideo's directed temporal attention (§3.2): A_t = softmax(Q_t K_t^T / sqrt(d) + log M) over frames.

Every spatial position (h, w) of every clip is a sequence of F frame tokens; attention runs along that
frame axis only. M is the lower-triangular causal mask: query frame p sees key frames q <= p, so "the
current token is only affected by previous tokens" [docs/paper.md §3.2]. The paper writes the mask as a product
after the softmax; like standard practice we mask the logits before it (equivalently, post-softmax masking
followed by renormalisation), so every row sums to 1. `directed=False` is the bidirectional ablation
(VDM / Make-A-Video style temporal attention, M = all ones).

Our additions, not in the paper: a pre-norm (LayerNorm over C, which is per token and so keeps
causality, unlike a GroupNorm over all frames), an optional sinusoidal frame-index embedding
(`frame_pos_embed`; the paper mentions none), and a zero-initialised output projection so that the
module -- a residual branch, T-Attn(z) in z = S-Attn(z) + T-Attn(z) -- outputs exactly 0 at init.
"""

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minimagic.embedding import sinusoidal_embedding

MAX_KERNEL_BATCH = 65535  # the CUDA SDPA kernels put the batch on a grid axis capped at 2**16 - 1


class DirectedTemporalAttention(nn.Module):
    """T-Attn(z): causal multi-head self-attention along frames; returns the branch, not z + branch."""

    def __init__(
        self,
        channels: int,
        num_heads: int,
        max_frames: int,
        directed: bool = True,
        frame_pos_embed: bool = True,
    ):
        super().__init__()
        if channels < 1 or num_heads < 1 or channels % num_heads or max_frames < 1:
            raise ValueError(
                f"need channels divisible by num_heads and max_frames >= 1, got channels={channels}, "
                f"num_heads={num_heads}, max_frames={max_frames}"
            )
        self.num_heads, self.max_frames, self.directed = num_heads, max_frames, directed
        self.norm = nn.LayerNorm(channels)
        self.to_qkv = nn.Linear(channels, 3 * channels, bias=False)  # Q_t, K_t, V_t in one GEMM
        self.to_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.to_out.weight)  # zero branch at init: the video model starts as the image model
        nn.init.zeros_(self.to_out.bias)
        frame_pos = sinusoidal_embedding(torch.arange(max_frames), channels) if frame_pos_embed else None
        self.register_buffer("frame_pos", frame_pos, persistent=False)  # (max_frames, C) or None

    def _qkv(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (B, F, C, H, W) -> Q, K, V each ((B*H*W), heads, F, d)."""
        if z.ndim != 5 or z.shape[2] != self.norm.normalized_shape[0]:
            raise ValueError(
                f"expected z of shape (B, F, {self.norm.normalized_shape[0]}, H, W), got {tuple(z.shape)}"
            )
        if z.shape[1] > self.max_frames:
            raise ValueError(f"got {z.shape[1]} frames, but this layer supports at most {self.max_frames}")
        tokens = self.norm(rearrange(z, "b f c h w -> (b h w) f c"))
        if self.frame_pos is not None:
            tokens = tokens + self.frame_pos[: z.shape[1]].to(tokens.dtype)  # frame-index embedding
        qkv = rearrange(self.to_qkv(tokens), "n f (three h d) -> three n h f d", three=3, h=self.num_heads)
        return qkv[0], qkv[1], qkv[2]

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Fused SDPA; is_causal=True is exactly the lower-triangular M here (as many query as key frames),
        applied to the logits inside the kernel. The tests check it against `attention_weights`."""
        if q.shape[0] <= MAX_KERNEL_BATCH:
            return F.scaled_dot_product_attention(q, k, v, is_causal=self.directed)
        chunks = zip(
            q.split(MAX_KERNEL_BATCH), k.split(MAX_KERNEL_BATCH), v.split(MAX_KERNEL_BATCH), strict=True
        )
        return torch.cat([self._attend(*chunk) for chunk in chunks])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, F, C, H, W) -> T-Attn(z) (B, F, C, H, W), zero at initialisation."""
        out = self._attend(*self._qkv(z))  # ((B*H*W), heads, F, d)
        out = self.to_out(rearrange(out, "n h f d -> n f (h d)"))
        return rearrange(out, "(b h w) f c -> b f c h w", b=z.shape[0], h=z.shape[3])

    def attention_weights(self, z: torch.Tensor) -> torch.Tensor:
        """A_t for visualisation: z (B, F, C, H, W) -> (B, H, W, heads, F_query, F_key); rows sum to 1."""
        q, k, _ = self._qkv(z)
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # ((B*H*W), heads, F, F)
        if self.directed:
            logits = logits.masked_fill(~causal_mask(z.shape[1], z.device), float("-inf"))
        return rearrange(logits.softmax(-1), "(b h w) n f g -> b h w n f g", b=z.shape[0], h=z.shape[3])


def causal_mask(num_frames: int, device: torch.device | None = None) -> torch.Tensor:
    """M (F, F) bool, True where query frame p may attend to key frame q, i.e. q <= p (lower triangle)."""
    return torch.ones(num_frames, num_frames, dtype=torch.bool, device=device).tril()
