"""Classifier-free guidance of MagicVideo: eps~ = eps(z_t, "") + s (eps(z_t, y) - eps(z_t, "")).

One network learns both eps(z_t, tau(y)) and eps(z_t, tau("")): in training each caption is replaced by the
empty prompt with probability p (`drop_condition`); at sampling time the two predictions are extrapolated
with the guidance scale s (`classifier_free_guidance`; Ho & Salimans 2022, Eq. 6).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def classifier_free_guidance(
    model: Callable[..., Tensor],
    x_t: Tensor,
    t: Tensor,
    context: Tensor,
    uncond_context: Tensor,
    guidance_scale: float,
    **kwargs,
) -> Tensor:
    """eps~ = eps(x_t, "") + s (eps(x_t, y) - eps(x_t, "")), both halves in one batched model call.

    model(x_t, t, context=..., **kwargs); context is (B, L, D), uncond_context (1 or B, L, D). Tensor kwargs
    with leading dim B (fps) are repeated for the unconditional half.
    """
    if guidance_scale == 1.0:
        return model(x_t, t, context=context, **kwargs)  # s = 1 is the conditional prediction itself
    B = x_t.shape[0]
    if context.ndim != 3 or context.shape[0] != B or uncond_context.shape[1:] != context.shape[1:]:
        shapes = f"{tuple(context.shape)} and {tuple(uncond_context.shape)}"
        raise ValueError(f"need context (B={B}, L, D) and uncond_context (1|B, L, D), got {shapes}")
    doubled = {}
    for name, value in kwargs.items():
        if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == B:
            value = torch.cat([value, value])  # (2B, ...)
        doubled[name] = value
    both = torch.cat([context, uncond_context.expand_as(context)])  # (2B, L, D) = [tau(y); tau("")]
    eps_cond, eps_uncond = model(torch.cat([x_t, x_t]), torch.cat([t, t]), context=both, **doubled).chunk(2)
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def drop_condition(
    context: Tensor,
    uncond_context: Tensor,
    p: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Caption dropout for CFG training: each sample's tau(y) (B, L, D) becomes tau("") with probability p."""
    if not 0 <= p <= 1:
        raise ValueError(f"drop probability p must be in [0, 1], got {p}")
    if uncond_context.shape[1:] != context.shape[1:]:
        shapes = f"{tuple(uncond_context.shape)} vs context {tuple(context.shape)}"
        raise ValueError(f"uncond_context must be (1|B, L, D) with the context's L and D, got {shapes}")
    draw_device = generator.device if generator is not None else context.device
    drop = torch.rand(context.shape[0], generator=generator, device=draw_device) < p
    drop = drop.to(context.device)  # (B,) bool: True = use the empty caption
    return torch.where(drop[:, None, None], uncond_context.expand_as(context), context)  # (B, L, D)
