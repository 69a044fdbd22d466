"""Checkers for the exercises of notebooks 03 (FrameAdaptor), 04 (directed temporal attention) and 07 (VideoVAE),
graded against adaptor.py, temporal_attention.py, videovae.py and metrics.py (see grading.py)."""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from minimagic.adaptor import FrameAdaptor
from minimagic.exercises.grading import Fault, grade, named
from minimagic.metrics import flicker
from minimagic.temporal_attention import causal_mask
from minimagic.vae import VAEConfig
from minimagic.videovae import VideoVAE, VideoVAEConfig


def _randn(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=generator)


def check_frame_adaptor(student: Callable) -> bool:
    """frame_adaptor(z, scale, shift) -> S_i * z_i + B_i for z (B, F, C, H, W), S and B (F_max, C), as FrameAdaptor."""
    g = torch.Generator().manual_seed(0)
    # the first input has F == C == H == W, so that S, B broadcast over the wrong axes give values, not errors;
    # the last has fewer frames than the adaptor has rows (a short clip uses rows 0 .. F-1)
    shapes = [((2, 4, 4, 4, 4), 4), ((3, 5, 2, 3, 2), 5), ((2, 3, 4, 2, 2), 6)]  # z shape, rows of S and B
    trials = [{"z": _randn(g, *shape), "scale": torch.rand(rows, shape[2], generator=g) + 0.5,
               "shift": _randn(g, rows, shape[2])} for shape, rows in shapes]

    def package(z, scale, shift):
        adaptor = FrameAdaptor(*scale.shape)
        with torch.no_grad():
            adaptor.scale.copy_(scale)
            adaptor.shift.copy_(shift)
            return adaptor(z)

    def rows(x, z):  # the first F rows as (F, C, 1, 1)
        return x[: z.shape[1], :, None, None]

    faults = [
        Fault("S and B broadcast over the wrong axes: view them as (F, C, 1, 1) against (B, F, C, H, W)",
              lambda z, scale, shift: z * scale[:, :, None] + shift[:, :, None]),
        Fault("frames and channels swapped: S[i, c] scales channel c of frame i",
              lambda z, scale, shift: z * scale.T[:, :, None, None] + shift.T[:, :, None, None]),
        Fault("shift applied before the scale: the adaptor is S_i * z_i + B_i, not S_i * (z_i + B_i)",
              lambda z, scale, shift: (z + rows(shift, z)) * rows(scale, z)),
        Fault("every frame uses row 0 of S and B: frame i must use row i",
              lambda z, scale, shift: z * scale[0, :, None, None] + shift[0, :, None, None]),
    ]
    return grade(named(student, "frame_adaptor"), student, package, trials, faults)


def _as_bool(mask) -> torch.Tensor:
    return torch.as_tensor(mask).bool()


def check_causal_mask(student: Callable) -> bool:
    """causal_mask(num_frames) -> M (F, F), True (or 1) where query frame p may see key frame q, i.e. q <= p."""
    trials = [{"num_frames": n} for n in (4, 1, 8)]
    faults = [
        Fault("transposed: the upper triangle lets frame p see the later frames q > p",
              lambda num_frames: torch.ones(num_frames, num_frames).triu().bool()),
        Fault("the diagonal is missing: frame p must also see itself (q <= p, not q < p)",
              lambda num_frames: torch.ones(num_frames, num_frames).tril(-1).bool()),
        Fault("bidirectional mask: every frame sees every frame", lambda num_frames: torch.ones(num_frames, num_frames)
              .bool()),
    ]
    name = named(student, "causal_mask")
    return grade(name, lambda num_frames: _as_bool(student(num_frames)), causal_mask, trials, faults)


def _attention_trials() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 2, 5, 8), (2, 4, 8, 4)]  # (B*H*W, heads, F, d)
    return [{"q": _randn(g, *s), "k": _randn(g, *s), "v": _randn(g, *s)} for s in shapes]


def _softmax_attention(q, k, v, mask=None, scale=None, renormalise=True, after=False):
    logits = q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5 if scale is None else scale)  # (N, heads, F, F)
    if mask is not None and not after:
        logits = logits.masked_fill(~mask, float("-inf"))
    weights = logits.softmax(-1)
    if mask is not None and after:
        weights = weights * mask
        if renormalise:
            weights = weights / weights.sum(-1, keepdim=True)
    return weights @ v


def _causality(student: Callable, inputs: dict) -> str | None:
    """Change the keys and values of frames >= p: the output of frames < p must not move."""
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    num_frames = q.shape[2]
    for p in range(1, num_frames):
        k2, v2 = k.clone(), v.clone()
        k2[:, :, p:], v2[:, :, p:] = k2[:, :, p:] + 1.5, v2[:, :, p:] * -2 + 1
        before, after = student(q.clone(), k.clone(), v.clone()), student(q.clone(), k2, v2)
        if not torch.allclose(before[:, :, :p], after[:, :, :p], atol=1e-5):
            return (f"causality broken: the output of frame {p - 1} changes when frames >= {p} change "
                    "(mask missing, bidirectional or transposed)")
    return None


def check_masked_attention(student: Callable) -> bool:
    """masked_attention(q, k, v) -> softmax(Q K^T / sqrt(d) + log M) V for (N, heads, F, d), as the package's
    DirectedTemporalAttention computes it (SDPA with the causal mask M of temporal_attention.causal_mask)."""

    def package(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(q.shape[2]))

    def mask(q):
        return causal_mask(q.shape[2])

    faults = [
        Fault("mask applied after the softmax without renormalising: the rows of A must sum to 1",
              lambda q, k, v: _softmax_attention(q, k, v, mask(q), renormalise=False, after=True)),
        Fault("logits not scaled by 1 / sqrt(d)", lambda q, k, v: _softmax_attention(q, k, v, mask(q), scale=1.0)),
        Fault("logits scaled by 1 / d instead of 1 / sqrt(d)",
              lambda q, k, v: _softmax_attention(q, k, v, mask(q), scale=1 / q.shape[-1])),
        Fault("softmax over the query axis instead of the key axis",
              lambda q, k, v: (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).masked_fill(~mask(q), float("-inf"))
              .softmax(-2).nan_to_num() @ v),
    ]
    return grade(named(student, "masked_attention"), student, package, _attention_trials(), faults, checks=[_causality])


def _tiny_videovae(seed: int, num_frames: int = 4) -> VideoVAE:
    """A tiny VideoVAE whose temporal layers have random (not zero) weights, so that they matter."""
    torch.manual_seed(seed)
    model = VideoVAE(VideoVAEConfig(VAEConfig.preset("tiny"), num_frames)).eval()
    with torch.no_grad():
        for layer in model.temporal.values():
            layer.to_out.weight.normal_(0, 0.3)
    return model


def check_temporal_residual(student: Callable) -> bool:
    """temporal_residual(h, attention, num_frames) -> h + T-Attn(h) for decoder features h (B*F, C, H, W),
    checked inside a VideoVAE decoder against VideoVAE.decode_video."""
    g = torch.Generator().manual_seed(0)
    trials = [{"latents": _randn(g, *shape), "seed": seed} for seed, shape in enumerate([(2, 4, 4, 4, 4),
                                                                                         (1, 3, 4, 2, 2)])]

    def decode(branch: Callable):  # VideoVAE.decode_video's layers, with `branch` as its two temporal residuals
        def run(latents, seed):
            model, (B, num_frames) = _tiny_videovae(seed), latents.shape[:2]
            decoder = model.vae.decoder
            z = rearrange(latents / model.config.vae.scale_factor, "b f c h w -> (b f) c h w")
            with torch.no_grad():
                h = decoder.mid_block(decoder.conv_in(model.vae.post_quant_conv(z)))  # (B*F, C', h, w)
                h = branch(h, model.temporal["mid"], num_frames)
                for level in decoder.up_blocks:
                    h = level(h)
                h = branch(h, model.temporal["levels"], num_frames)  # (B*F, C0, H, W)
                frames = decoder.conv_out(torch.nn.functional.silu(decoder.conv_norm_out(h)))
            return rearrange(frames, "(b f) c h w -> b f c h w", b=B)
        return run

    def package(latents, seed):
        with torch.no_grad():
            return _tiny_videovae(seed).decode_video(latents)

    faults = [
        Fault("missing residual: return h + T-Attn(h), not T-Attn(h) alone",
              decode(lambda h, attention, num_frames: attention(h.unflatten(0, (-1, num_frames))).flatten(0, 1))),
        Fault("frames unfolded in the wrong order: (B*F) is batch-major, unflatten it to (B, F), not (F, B)",
              decode(lambda h, attention, num_frames: h + rearrange(
                  attention(rearrange(h, "(f b) c x y -> b f c x y", f=num_frames)), "b f c x y -> (f b) c x y"))),
        Fault("temporal layers skipped: the features come back unchanged", decode(lambda h, attention, num_frames: h)),
    ]
    return grade(named(student, "temporal_residual"), decode(student), package, trials, faults, atol=1e-4)


def check_flicker(student: Callable) -> bool:
    """flicker(video, reference) -> mean |(x^_{i+1} - x^_i) - (x_{i+1} - x_i)| as a float, as metrics.flicker."""
    g = torch.Generator().manual_seed(0)
    trials = []
    for shape in [(2, 5, 1, 6, 6), (3, 4, 3, 5, 4)]:
        reference = torch.rand(shape, generator=g) * 2 - 1
        trials.append({"video": (reference + 0.3 * _randn(g, *shape)).clamp(-1, 1), "reference": reference})

    def change(x, dim=1):
        return x.diff(dim=dim)

    faults = [
        Fault("ignored the reference: a clip that really moves would count as flicker",
              lambda video, reference: change(video).abs().mean().item()),
        Fault("measured the per-frame error |x^ - x|, not the error of the frame-to-frame change",
              lambda video, reference: (video - reference).abs().mean().item()),
        Fault("differences taken along the batch axis 0, not the frame axis 1",
              lambda video, reference: (change(video, 0) - change(reference, 0)).abs().mean().item()),
        Fault("squared errors: flicker is the mean absolute error of the changes",
              lambda video, reference: (change(video) - change(reference)).square().mean().item()),
    ]
    name = named(student, "flicker")
    return grade(name, lambda video, reference: float(student(video, reference)), flicker, trials, faults)
