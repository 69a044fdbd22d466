"""Checkers for the exercises of notebooks 08 (interpolation conditioning) and 09 (the Fréchet distance),
graded against interpolation.py and fvd.py (see grading.py)."""

from collections.abc import Callable
from functools import cache

import torch

from minimagic.exercises.grading import Fault, grade, named
from minimagic.fvd import frechet_distance
from minimagic.interpolation import FrameInterpolator
from minimagic.unet import UNetConfig
from minimagic.video_unet import VideoUNet, VideoUNetConfig


@cache
def _interpolator(latent_channels: int) -> FrameInterpolator:
    """A tiny FrameInterpolator (random weights: only its `conditioning` is used) for 6 frames."""
    unet = UNetConfig.preset("tiny", in_channels=2 * latent_channels + 1, out_channels=latent_channels)
    return FrameInterpolator(VideoUNet(VideoUNetConfig(unet, num_frames=6, temporal_attention="bidirectional")))


def check_interpolation_conditioning(student: Callable) -> bool:
    """interpolation_conditioning(keyframes, num_between) -> (zhat (B, k+2, c, h, w), mask (B, k+2) bool),
    zhat_i = (1 - a_i) z^a + a_i z^b with a_i = i / (k + 1), as FrameInterpolator.conditioning."""
    g = torch.Generator().manual_seed(0)
    trials = [{"keyframes": torch.randn(shape, generator=g), "num_between": k}
              for shape, k in [((2, 2, 4, 3, 3), 3), ((1, 2, 4, 2, 2), 1), ((3, 2, 4, 2, 3), 4)]]

    def package(keyframes, num_between):
        return _interpolator(keyframes.shape[2]).conditioning(keyframes, num_between)

    def with_weights(a, keyframes, num_between, mask=None):
        a = a.view(1, -1, 1, 1, 1)  # (1, k+2, 1, 1, 1)
        known = (1 - a) * keyframes[:, :1] + a * keyframes[:, 1:]
        return known, package(keyframes, num_between)[1] if mask is None else mask

    def right_weights(num_between):
        return torch.linspace(0, 1, num_between + 2)

    def student_bool_mask(keyframes, num_between):
        known, mask = student(keyframes, num_between)
        return known, torch.as_tensor(mask).bool()

    def zeros_between(keyframes, num_between):
        known, mask = package(keyframes, num_between)
        known = known.clone()
        known[:, 1:-1] = 0
        return known, mask

    faults = [
        Fault("keyframes swapped: frame 0 must be z^a (weight 1 - a_0 = 1 on the first keyframe)",
              lambda keyframes, num_between: with_weights(1 - right_weights(num_between), keyframes, num_between)),
        Fault("blend weights a_i = i / (k + 2): they must run from 0 at z^a to 1 at z^b, a_i = i / (k + 1)",
              lambda keyframes, num_between: with_weights(torch.arange(num_between + 2) / (num_between + 2),
                                                          keyframes, num_between)),
        Fault("in-between frames get zeros: they must get the blend of the two keyframes", zeros_between),
        Fault("mask inverted: True marks the two given keyframes, False the frames to generate",
              lambda keyframes, num_between: (package(keyframes, num_between)[0], ~package(keyframes, num_between)[1])),
    ]
    return grade(named(student, "interpolation_conditioning"), student_bool_mask, package, trials, faults)


def check_frechet_distance(student: Callable) -> bool:
    """frechet_distance(a (N, D), b (M, D)) -> d^2 as a float, as fvd.frechet_distance."""
    g = torch.Generator().manual_seed(0)
    trials = []
    for n, m, d in [(60, 50, 3), (200, 150, 6)]:
        mixing = torch.randn(d, d, generator=g)  # correlated features: full covariances, not diagonal ones
        a = torch.randn(n, d, generator=g) @ mixing
        other = mixing + 0.5 * torch.randn(d, d, generator=g)
        b = torch.randn(m, d, generator=g) @ other + torch.randn(d, generator=g)
        trials.append({"a": a.double(), "b": b.double()})

    def root(matrix):  # the symmetric square root of a PSD matrix
        values, vectors = torch.linalg.eigh(matrix)
        return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T

    def distance(a, b, cov=torch.cov, trace_term=True, diagonal=False):
        cov_a, cov_b = cov(a.T), cov(b.T)
        if diagonal:
            cov_a, cov_b = torch.diag(cov_a.diag()), torch.diag(cov_b.diag())
        d2 = (a.mean(0) - b.mean(0)).square().sum()
        if trace_term:
            middle = root(cov_a) @ cov_b @ root(cov_a)
            d2 = d2 + cov_a.trace() + cov_b.trace() - 2 * root(middle).trace()
        return d2.item()

    faults = [
        Fault("only the mean term |mu_1 - mu_2|^2: the covariance (trace) term is missing",
              lambda a, b: distance(a, b, trace_term=False)),
        Fault("returned d, not d^2: the Fréchet distance of FID/FVD is the squared distance",
              lambda a, b: distance(a, b) ** 0.5),
        Fault("covariance normalised by N instead of N - 1 (use torch.cov)",
              lambda a, b: distance(a, b, cov=lambda x: torch.cov(x, correction=0))),
        Fault("only the variances (diagonal covariances, or an elementwise square root): the features are correlated",
              lambda a, b: distance(a, b, diagonal=True)),
    ]
    name = named(student, "frechet_distance")
    return grade(name, lambda a, b: float(student(a, b)), frechet_distance, trials, faults, atol=1e-6, rtol=1e-5)
