"""Every exercise checker accepts its reference solution and names the fault of plausible wrong answers."""

import pytest
import torch
from einops import rearrange

import minimagic.exercises as exercises
from minimagic.exercises import solutions

CHECKERS = {  # checker -> reference solution
    "check_reparameterise": solutions.reparameterise,
    "check_kl": solutions.kl_divergence,
    "check_q_sample": solutions.q_sample,
    "check_ddim_step": solutions.ddim_step,
    "check_guidance": solutions.guided_eps,
    "check_frame_adaptor": solutions.frame_adaptor,
    "check_causal_mask": solutions.causal_mask,
    "check_masked_attention": solutions.masked_attention,
    "check_temporal_residual": solutions.temporal_residual,
    "check_flicker": solutions.flicker,
    "check_interpolation_conditioning": solutions.interpolation_conditioning,
    "check_frechet_distance": solutions.frechet_distance,
    "check_superres_input": solutions.superres_input,
}


def grade(checker: str, student, capsys) -> tuple[bool, str]:
    passed = getattr(exercises, checker)(student)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, f"a checker prints one line, got {lines}"
    return passed, lines[0]


def test_every_checker_is_exported_and_has_a_solution():
    assert sorted(CHECKERS) == sorted(exercises.__all__)


@pytest.mark.parametrize("checker", sorted(CHECKERS))
def test_checker_accepts_the_reference_solution(checker, capsys):
    passed, line = grade(checker, CHECKERS[checker], capsys)
    assert passed and "passed" in line


@pytest.mark.parametrize("checker", sorted(CHECKERS))
def test_unfilled_stub_reports_not_attempted_without_raising(checker, capsys):
    def stub(*args):
        raise NotImplementedError  # your code

    passed, line = grade(checker, stub, capsys)
    assert not passed and "not attempted yet" in line


def test_a_crashing_answer_is_reported_not_raised(capsys):
    passed, line = grade("check_q_sample", lambda x0, t, noise, betas: x0 @ noise, capsys)
    assert not passed and "raised RuntimeError" in line


# plausible wrong answers, each with the words its checker must use to name the fault
def reparameterise_variance(mean, logvar, noise):
    return mean + logvar.exp() * noise


def kl_mean(mean, logvar):
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar).flatten(1).mean(1)


def kl_scalar(mean, logvar):
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum()


def q_sample_alpha(x0, t, noise, betas):
    alpha = (1 - betas)[t].view(-1, *[1] * (x0.ndim - 1))  # alpha_t, not alpha-bar_t
    return alpha.sqrt() * x0 + (1 - alpha).sqrt() * noise


def q_sample_last_axis(x0, t, noise, betas):
    abar = torch.cumprod(1 - betas, 0)[t]  # (B,) broadcast against the last axis
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def ddim_wrong_direction(x_t, eps, abar_t, abar_prev):
    x0_hat = (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
    return abar_prev.sqrt() * x0_hat + (1 - abar_t).sqrt() * eps


def ddim_x0(x_t, eps, abar_t, abar_prev):
    return (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()


def guidance_swapped(eps_cond, eps_uncond, guidance_scale):
    return eps_cond + guidance_scale * (eps_uncond - eps_cond)


def adaptor_wrong_axis(z, scale, shift):
    return z * scale[:, :, None] + shift[:, :, None]


def adaptor_shift_first(z, scale, shift):
    F = z.shape[1]
    return (z + shift[:F, :, None, None]) * scale[:F, :, None, None]


def adaptor_all_rows(z, scale, shift):  # fails for a clip shorter than the adaptor
    return z * scale[:, :, None, None] + shift[:, :, None, None]


def mask_upper(num_frames):
    return torch.ones(num_frames, num_frames, dtype=torch.bool).triu()


def mask_strict(num_frames):
    return torch.ones(num_frames, num_frames, dtype=torch.bool).tril(-1)


def mask_bidirectional(num_frames):
    return torch.ones(num_frames, num_frames, dtype=torch.bool)


def attention_mask_after_softmax(q, k, v):
    weights = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)
    return weights * solutions.causal_mask(q.shape[2]) @ v  # masked, but rows no longer sum to 1


def attention_bidirectional(q, k, v):
    return (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1) @ v


def attention_no_scale(q, k, v):
    logits = (q @ k.transpose(-1, -2)).masked_fill(~solutions.causal_mask(q.shape[2]), float("-inf"))
    return logits.softmax(-1) @ v


def residual_missing(h, attention, num_frames):
    return rearrange(attention(rearrange(h, "(b f) c x y -> b f c x y", f=num_frames)), "b f c x y -> (b f) c x y")


def residual_frames_first(h, attention, num_frames):
    branch = attention(rearrange(h, "(f b) c x y -> b f c x y", f=num_frames))
    return h + rearrange(branch, "b f c x y -> (f b) c x y")


def flicker_no_reference(video, reference):
    return (video[:, 1:] - video[:, :-1]).abs().mean().item()


def flicker_per_frame(video, reference):
    return (video - reference).abs().mean().item()


def conditioning_swapped(keyframes, num_between):
    known, mask = solutions.interpolation_conditioning(keyframes, num_between)
    return known.flip(1), mask


def conditioning_k_plus_2(keyframes, num_between):
    a = (torch.arange(num_between + 2) / (num_between + 2))[None, :, None, None, None]
    _, mask = solutions.interpolation_conditioning(keyframes, num_between)
    return (1 - a) * keyframes[:, :1] + a * keyframes[:, 1:], mask


def conditioning_zeros(keyframes, num_between):
    known, mask = solutions.interpolation_conditioning(keyframes, num_between)
    known[:, 1:-1] = 0
    return known, mask


def frechet_means_only(a, b):
    return (a.mean(0) - b.mean(0)).square().sum().item()


def frechet_root(a, b):
    return solutions.frechet_distance(a, b) ** 0.5


def superres_input_swapped(x_t, low_res):
    return solutions.superres_input(x_t, low_res).roll(x_t.shape[1], dims=1)  # [up(y) ; x_t]


def superres_input_nearest(x_t, low_res):
    return torch.cat([x_t, torch.nn.functional.interpolate(low_res, scale_factor=2)], dim=1)


def superres_input_unclamped(x_t, low_res):
    up = torch.nn.functional.interpolate(low_res, scale_factor=2, mode="bicubic")
    return torch.cat([x_t, up], dim=1)


def superres_input_no_noisy_frame(x_t, low_res):
    return solutions.superres_input(x_t, low_res)[:, x_t.shape[1]:]



WRONG = [
    ("check_reparameterise", reparameterise_variance, "instead of the standard deviation"),
    ("check_kl", kl_mean, "averaged over the latent"),
    ("check_kl", kl_scalar, "wrong shape"),
    ("check_q_sample", q_sample_alpha, "alpha_t = 1 - beta_t instead of alpha-bar"),
    ("check_q_sample", q_sample_last_axis, "broadcast over the last axis"),
    ("check_ddim_step", ddim_wrong_direction, "must use sqrt(1 - abar_prev)"),
    ("check_ddim_step", ddim_x0, "returned the x_0 estimate"),
    ("check_guidance", guidance_swapped, "swapped"),
    ("check_frame_adaptor", adaptor_wrong_axis, "broadcast over the wrong axes"),
    ("check_frame_adaptor", adaptor_shift_first, "shift applied before the scale"),
    ("check_frame_adaptor", adaptor_all_rows, "raised RuntimeError"),
    ("check_causal_mask", mask_upper, "transposed"),
    ("check_causal_mask", mask_strict, "diagonal is missing"),
    ("check_causal_mask", mask_bidirectional, "bidirectional mask"),
    ("check_masked_attention", attention_mask_after_softmax, "after the softmax without renormalising"),
    ("check_masked_attention", attention_bidirectional, "causality broken"),
    ("check_masked_attention", attention_no_scale, "not scaled by 1 / sqrt(d)"),
    ("check_temporal_residual", residual_missing, "missing residual"),
    ("check_temporal_residual", residual_frames_first, "unfolded in the wrong order"),
    ("check_flicker", flicker_no_reference, "ignored the reference"),
    ("check_flicker", flicker_per_frame, "per-frame error"),
    ("check_interpolation_conditioning", conditioning_swapped, "keyframes swapped"),
    ("check_interpolation_conditioning", conditioning_k_plus_2, "a_i = i / (k + 1)"),
    ("check_interpolation_conditioning", conditioning_zeros, "get zeros"),
    ("check_frechet_distance", frechet_means_only, "trace) term is missing"),
    ("check_frechet_distance", frechet_root, "returned d, not d^2"),
    ("check_superres_input", superres_input_swapped, "channels in the wrong order"),
    ("check_superres_input", superres_input_nearest, "nearest-neighbour upsampling"),
    ("check_superres_input", superres_input_unclamped, "not clamped"),
    ("check_superres_input", superres_input_no_noisy_frame, "wrong shape"),
]


@pytest.mark.parametrize("checker, student, fault", WRONG, ids=[f"{c}-{s.__name__}" for c, s, _ in WRONG])
def test_checker_rejects_a_wrong_answer_and_names_the_fault(checker, student, fault, capsys):
    passed, line = grade(checker, student, capsys)
    assert not passed and fault in line, line


def test_every_checker_is_tested_against_a_wrong_answer():
    assert {checker for checker, _, _ in WRONG} == set(CHECKERS)


def test_unknown_wrong_answer_reports_where_the_values_are_off(capsys):
    passed, line = grade("check_flicker", lambda video, reference: solutions.flicker(video, reference) + 0.01, capsys)
    assert not passed and line.startswith("flicker: values off")


@pytest.mark.parametrize("checker", sorted(CHECKERS))
def test_every_listed_fault_is_reachable_and_named(checker, monkeypatch, capsys):
    """Each Fault a checker lists is told apart from the right answer and from the faults listed before it."""
    from minimagic.exercises import grading

    recorded = {}

    def record(name, student, reference, trials, faults=(), checks=(), **tolerances):
        recorded.update(name=name, reference=reference, trials=trials, faults=faults, tolerances=tolerances)
        return True

    module = getattr(exercises, checker).__module__
    monkeypatch.setattr(f"{module}.grade", record)
    getattr(exercises, checker)(CHECKERS[checker])
    assert recorded["faults"], f"{checker} lists no faults"
    for fault in recorded["faults"]:
        passed = grading.grade(recorded["name"], fault.wrong, recorded["reference"], recorded["trials"],
                               recorded["faults"], **recorded["tolerances"])
        line = capsys.readouterr().out.strip()
        assert not passed and line.endswith(fault.message), line
