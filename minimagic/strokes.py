"""Spurious strokes in generated clips (VideoVAE, docs/paper.md §5): the share of ink lying apart from the digit.

A Moving-digits frame holds one digit on black. A decoder or sampler artefact often shows up as a ghost
stroke or a bright blob beside the digit. The digit is taken to be the largest connected blob of ink
(pixels brighter than `threshold`, 8-connected); ink that lies more than `margin` pixels from it is
spurious. The default threshold -0.5 (a quarter of full brightness, the edge of `background_flicker`'s
background) keeps a real digit in one blob: held-out real clips score 0.

    spurious(x) = |ink(x) \\ dilate(digit(x), margin)| / |ink(x)|,   0 for a frame without ink.
"""

import torch
import torch.nn.functional as F


def connected_blobs(ink: torch.Tensor) -> torch.Tensor:
    """8-connected components of boolean masks (N, H, W): each ink pixel gets the largest pixel index + 1
    of its blob (found by spreading the maximum to neighbours until nothing changes), background 0."""
    if ink.ndim != 3 or ink.dtype != torch.bool:
        raise ValueError(f"connected_blobs expects boolean masks (N, H, W), got {ink.dtype} {tuple(ink.shape)}")
    N, H, W = ink.shape
    index = torch.arange(1, H * W + 1, dtype=torch.float32, device=ink.device).reshape(1, H, W)  # (1, H, W)
    labels = torch.where(ink, index, 0.0)[:, None]  # (N, 1, H, W)
    for _ in range(H * W):  # a blob's label crosses it in fewer steps than it has pixels
        spread = F.max_pool2d(labels, 3, stride=1, padding=1) * ink[:, None]  # (N, 1, H, W)
        if torch.equal(spread, labels):
            break
        labels = spread
    return labels[:, 0].long()  # (N, H, W)


def digit_mask(ink: torch.Tensor) -> torch.Tensor:
    """The largest blob of each ink mask (N, H, W) -> (N, H, W) bool (all False where there is no ink)."""
    labels = connected_blobs(ink)  # (N, H, W)
    N, H, W = ink.shape
    sizes = torch.zeros(N, H * W + 1, device=ink.device).scatter_add_(
        1, labels.flatten(1), torch.ones(N, H * W, device=ink.device))  # (N, H*W + 1): pixels per label
    sizes[:, 0] = 0  # the background is no blob
    largest = sizes.argmax(dim=1)  # (N,)
    return (labels == largest[:, None, None]) & ink


def spurious_strokes(video: torch.Tensor, threshold: float = -0.5, margin: int = 3) -> torch.Tensor:
    """Per frame, the share of ink (pixels > `threshold`, video in [-1, 1]) farther than `margin` pixels
    from the frame's digit (its largest blob): (B, F, 1, H, W) -> (B, F) in [0, 1]."""
    if video.ndim != 5 or video.shape[2] != 1:
        raise ValueError(f"spurious_strokes expects a one-channel video (B, F, 1, H, W), got {tuple(video.shape)}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0 pixels, got {margin}")
    B, num_frames = video.shape[:2]
    ink = video.flatten(0, 2) > threshold  # (B*F, H, W)
    near_digit = F.max_pool2d(digit_mask(ink)[:, None].float(), 2 * margin + 1, stride=1, padding=margin)[:, 0] > 0
    stray = (ink & ~near_digit).flatten(1).sum(1)  # (B*F,)
    share = stray / ink.flatten(1).sum(1).clamp(min=1)  # (B*F,)
    return share.reshape(B, num_frames)  # (B, F)
