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

Streaming (our addition, docs/paper.md §10): because M hides later frames, the keys and values of a
finished frame never change, so they can be kept in a `TemporalKVCache` and a new frame attends to them
instead of recomputing them. The cached frames are the frames 0 .. P-1 of the window and the new ones
P .. P+F-1 (their frame-index rows); streaming.py decides what goes into the cache.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minimagic.embedding import sinusoidal_embedding

MAX_KERNEL_BATCH = 65535  # the CUDA SDPA kernels put the batch on a grid axis capped at 2**16 - 1


@dataclass
class TemporalKVCache:
    """K_t, V_t of the finished frames 0 .. num_frames-1, per DirectedTemporalAttention layer.

    `extend` = True while the VideoUNet runs finished frames: each layer then appends their K and V
    (the VideoUNet advances `num_frames` afterwards); False while it denoises new frames, which attend
    to the cache but are not stored. Tensors are ((B*H*W), heads, num_frames, d), as in the layer.
    """

    num_frames: int = 0
    extend: bool = False
    keys: dict = field(default_factory=dict)  # layer -> K of the cached frames
    values: dict = field(default_factory=dict)  # layer -> V of the cached frames


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

    def _qkv(self, z: torch.Tensor, first_frame: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (B, F, C, H, W), frames first_frame .. first_frame+F-1 -> Q, K, V each ((B*H*W), heads, F, d)."""
        if z.ndim != 5 or z.shape[2] != self.norm.normalized_shape[0]:
            raise ValueError(
                f"expected z of shape (B, F, {self.norm.normalized_shape[0]}, H, W), got {tuple(z.shape)}"
            )
        if first_frame + z.shape[1] > self.max_frames:
            raise ValueError(
                f"got frames {first_frame}..{first_frame + z.shape[1] - 1}, but this layer supports at most "
                f"{self.max_frames} frames"
            )
        tokens = self.norm(rearrange(z, "b f c h w -> (b h w) f c"))
        if self.frame_pos is not None:  # frame-index embedding of frames first_frame, first_frame + 1, ...
            tokens = tokens + self.frame_pos[first_frame : first_frame + z.shape[1]].to(tokens.dtype)
        qkv = rearrange(self.to_qkv(tokens), "n f (three h d) -> three n h f d", three=3, h=self.num_heads)
        return qkv[0], qkv[1], qkv[2]

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Fused SDPA. With as many query as key frames, is_causal=True is exactly the lower-triangular M,
        applied to the logits inside the kernel (the tests check it against `attention_weights`); with P
        cached key frames in front, M is the (F, P+F) mask whose row p allows keys q <= P + p."""
        if q.shape[0] > MAX_KERNEL_BATCH:
            chunks = zip(
                q.split(MAX_KERNEL_BATCH), k.split(MAX_KERNEL_BATCH), v.split(MAX_KERNEL_BATCH), strict=True
            )
            return torch.cat([self._attend(*chunk) for chunk in chunks])
        cached = k.shape[2] - q.shape[2]
        if not self.directed or cached == 0:
            return F.scaled_dot_product_attention(q, k, v, is_causal=self.directed)
        mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril(cached)  # (F, P+F)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def forward(self, z: torch.Tensor, cache: TemporalKVCache | None = None) -> torch.Tensor:
        """z (B, F, C, H, W) -> T-Attn(z) (B, F, C, H, W), zero at initialisation.

        With a cache holding P frames, z holds frames P .. P+F-1, which also attend to the cached K, V."""
        if cache is None:
            return self._project(self._attend(*self._qkv(z)), z)
        if not self.directed:
            raise ValueError("a KV cache needs directed temporal attention: bidirectional frames see the future")
        q, k, v = self._qkv(z, cache.num_frames)
        if cache.num_frames:
            past_k, past_v = cache.keys[self], cache.values[self]
            if past_k.shape[0] != k.shape[0]:
                raise ValueError(f"the cache holds {past_k.shape[0]} token sequences, this pass {k.shape[0]}")
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)  # ((B*H*W), heads, P+F, d)
        if cache.extend:
            cache.keys[self], cache.values[self] = k, v
        return self._project(self._attend(q, k, v), z)

    def _project(self, out: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Attention output ((B*H*W), heads, F, d) -> to_out -> (B, F, C, H, W), the shape of z."""
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
