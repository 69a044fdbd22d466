"""MagicVideo's frame-wise lightweight adaptor (docs/paper.md §2): z_i = S_i * Conv2d(z_i) + B_i, i = 1..F.

The 2D convolutions of the image U-Net are reused and shared by all frames; each one gets "a unique
adaptor" [docs/paper.md §2] holding a per-frame, per-channel scale S_i and shift B_i that adjust the mean and
variance of frame i's features ("image-to-video distribution adjustment"). The paper gives neither the
shape nor the initialisation: S, B of shape (F, C_out) broadcast over H and W, and S = 1, B = 0 (so the
inflated model starts as the image model run frame by frame) are our choices [docs/paper.md §2, §9 #4].
"""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class FrameContext:
    """The frames folded into the batch of the current forward pass: F of them, starting at `first_frame`.

    One instance is shared by the VideoUNet and all its AdaptedConv2d / temporal wrappers: the VideoUNet
    sets the fields at the start of each forward, and the wrappers read them to unfold (B*F) into (B, F).
    `first_frame` > 0 when earlier frames sit in a KV cache (streaming.py): the frames of this pass are
    then frames first_frame .. first_frame + F - 1 and use those rows of the adaptors; `cache` is that
    TemporalKVCache, read by the temporal attention layers.
    """

    num_frames: int = 1
    first_frame: int = 0
    cache: object | None = None  # a temporal_attention.TemporalKVCache while streaming


class FrameAdaptor(nn.Module):
    """z_i <- S_i * z_i + B_i for each frame i; S (F, C) starts at 1 and B (F, C) at 0 (our choice)."""

    def __init__(self, num_frames: int, channels: int):
        super().__init__()
        if num_frames < 1 or channels < 1:
            raise ValueError(
                f"FrameAdaptor needs num_frames >= 1 and channels >= 1, got {num_frames}, {channels}"
            )
        self.num_frames = num_frames
        self.scale = nn.Parameter(torch.ones(num_frames, channels))  # S
        self.shift = nn.Parameter(torch.zeros(num_frames, channels))  # B

    def forward(self, z: torch.Tensor, first_frame: int = 0) -> torch.Tensor:
        """z (B, F, C, H, W) holding frames first_frame .. first_frame + F - 1; frame i uses row i of S and B."""
        if z.ndim != 5:
            raise ValueError(f"FrameAdaptor expects (B, F, C, H, W), got shape {tuple(z.shape)}")
        F, C = z.shape[1], z.shape[2]
        if first_frame < 0 or first_frame + F > self.num_frames or C != self.scale.shape[1]:
            raise ValueError(
                f"FrameAdaptor holds {self.num_frames} frames x {self.scale.shape[1]} channels, "
                f"got frames {first_frame}..{first_frame + F - 1} x {C} channels"
            )
        rows = slice(first_frame, first_frame + F)
        scale = self.scale[rows, :, None, None].to(z.dtype)  # (F, C, 1, 1), broadcast over B, H, W
        shift = self.shift[rows, :, None, None].to(z.dtype)  # cast: keeps autocast's bf16 from promoting
        return torch.addcmul(shift, z, scale)  # S_i * z_i + B_i in one fused kernel


class AdaptedConv2d(nn.Module):
    """A shared (pre-trained) nn.Conv2d followed by its FrameAdaptor, on frames folded into the batch."""

    def __init__(self, conv: nn.Conv2d, num_frames: int, frame_context: FrameContext):
        super().__init__()
        self.conv = conv
        self.adaptor = FrameAdaptor(num_frames, conv.out_channels)
        self.frame_context = frame_context  # a plain attribute, shared by every wrapper: not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B*F, C_in, H, W) -> (B*F, C_out, H', W'), F read from the shared FrameContext."""
        F = self.frame_context.num_frames
        if x.shape[0] % F:
            raise ValueError(f"batch {x.shape[0]} is not a multiple of the current frame count F={F}")
        z = self.conv(x).unflatten(0, (-1, F))  # (B, F, C_out, H', W'), a view
        return self.adaptor(z, self.frame_context.first_frame).flatten(0, 1)  # (B*F, C_out, H', W')


def add_frame_adaptors(module: nn.Module, num_frames: int, frame_context: FrameContext) -> int:
    """Replace, in place, every nn.Conv2d inside `module` by an AdaptedConv2d; return how many.

    "A unique adaptor for each 2D convolution" [docs/paper.md §2]: conv_in/conv_out, ResBlock and shortcut convs,
    resampling convs and the 1x1 proj_in/proj_out of the spatial transformers. The convs themselves are
    kept (same objects, same weights). Convs already wrapped are skipped, so a second call returns 0.
    """
    if isinstance(module, nn.Conv2d):
        raise ValueError(
            "add_frame_adaptors needs a container module; wrap a bare nn.Conv2d with AdaptedConv2d"
        )
    targets = [
        (parent, name, child)
        for parent in module.modules()
        if not isinstance(parent, AdaptedConv2d)
        for name, child in parent.named_children()
        if isinstance(child, nn.Conv2d)
    ]  # collected first: the tree must not change while it is walked
    for parent, name, conv in targets:
        setattr(parent, name, AdaptedConv2d(conv, num_frames, frame_context))
    return len(targets)
