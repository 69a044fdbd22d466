"""Sinusoidal features of a number (DDPM / Transformer): the timestep t, the frame rate v, frame positions."""

import math

import torch
import torch.nn.functional as F


def sinusoidal_embedding(values: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer/DDPM sinusoidal features (N,) -> (N, dim); used for t, the FPS and frame positions."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=values.device) / half)
    args = values.float()[:, None] * freqs[None]  # (N, dim/2)
    return F.pad(torch.cat([torch.cos(args), torch.sin(args)], dim=-1), (0, dim % 2))  # (N, dim)
