"""Tests for the diffusion process (schedules, q_sample, loss, DDIM/DDPM samplers) and for CFG."""

import math

import pytest
import torch

from minimagic.diffusion import (
    DiffusionConfig,
    GaussianDiffusion,
    classifier_free_guidance,
    drop_condition,
)

SCHEDULE_NAMES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


def toy_denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A smooth, t-dependent stand-in for eps_theta (or v_theta)."""
    return 0.5 * torch.tanh(x) + 0.1 * torch.sin(t.float() / 100).view(-1, *[1] * (x.ndim - 1))


def exact_eps_denoiser(diffusion: GaussianDiffusion, x_star: torch.Tensor):
    """The exact network for data that is one point x*: eps = (x_t - sqrt(abar) x*) / sqrt(1 - abar)."""

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = diffusion.alphas_cumprod[t].view(-1, *[1] * (x_t.ndim - 1))
        eps = (x_t - abar.sqrt() * x_star) / (1 - abar).sqrt()
        if diffusion.config.prediction == "epsilon":
            return eps
        return abar.sqrt() * eps - (1 - abar).sqrt() * x_star  # v

    return denoise


@pytest.mark.parametrize("schedule", SCHEDULE_NAMES)
def test_schedules_match_diffusers(schedule):
    diffusers = pytest.importorskip("diffusers")
    ours = GaussianDiffusion(DiffusionConfig(schedule=schedule))
    ref = diffusers.DDPMScheduler(beta_schedule=SCHEDULE_NAMES[schedule], beta_start=0.00085, beta_end=0.012)
    torch.testing.assert_close(ours.betas, ref.betas, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod, atol=1e-6, rtol=0)


@pytest.mark.parametrize("schedule", SCHEDULE_NAMES)
def test_alpha_bar_strictly_decreasing_in_unit_interval(schedule):
    abar = GaussianDiffusion(DiffusionConfig(schedule=schedule)).alphas_cumprod
    assert (abar > 0).all() and (abar < 1).all()
    assert (abar[1:] < abar[:-1]).all()


def test_scaled_linear_is_stable_diffusion():
    betas = GaussianDiffusion().betas
    assert math.isclose(betas[0].item(), 0.00085, rel_tol=1e-5)
    assert math.isclose(betas[-1].item(), 0.012, rel_tol=1e-5)
    assert math.isclose(betas[500].sqrt().item(), (0.00085**0.5 + 0.012**0.5) / 2, rel_tol=1e-3)


@pytest.mark.parametrize(("prediction", "eta"), [("epsilon", 0.0), ("epsilon", 0.7), ("v", 0.0), ("v", 1.0)])
@pytest.mark.parametrize("num_steps", [2, 10])
def test_ddim_matches_diffusers(prediction, eta, num_steps):
    """Whole trajectories from one x_T (num_steps=2: one inner step, then the last) vs DDIMScheduler."""
    diffusers = pytest.importorskip("diffusers")
    diffusion = GaussianDiffusion(DiffusionConfig(prediction=prediction))
    ref = diffusers.DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
        timestep_spacing="leading",
        prediction_type="epsilon" if prediction == "epsilon" else "v_prediction",
    )
    ref.set_timesteps(num_steps)
    assert ref.timesteps.tolist() == diffusion.timesteps(num_steps)
    shape = (2, 3, 4, 4)
    ours = diffusion.sample(toy_denoiser, shape, num_steps, eta, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator)
    for t in ref.timesteps:
        x = ref.step(toy_denoiser(x, t.repeat(2)), t, x, eta=eta, generator=generator).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-5, rtol=1e-5)


def test_one_inner_ddim_step_matches_diffusers_default_final_alpha():
    """An inner step does not depend on set_alpha_to_one (False in Stable Diffusion); the last one does."""
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
    )
    ref.set_timesteps(2)
    calls = []

    def record(x, t):
        calls.append(x.clone())
        return toy_denoiser(x, t)

    GaussianDiffusion().sample(record, (1, 2, 3, 3), num_steps=2, generator=torch.Generator().manual_seed(3))
    x_T = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(3))
    t = ref.timesteps[0]
    expected = ref.step(toy_denoiser(x_T, t.view(1)), t, x_T).prev_sample
    torch.testing.assert_close(calls[1], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("num_train_timesteps", "num_steps", "atol"), [(1000, 10, 1e-5), (100, 100, 2e-4)])
def test_ddpm_matches_diffusers(num_train_timesteps, num_steps, atol):
    """Ancestral sampling over strided steps and the full chain vs DDPMScheduler (same noise draws).

    The full chain gets a looser atol: diffusers' float32 cumprod is off by ~1e-7 near t = 0, and 1 - abar
    (~1e-3 there) amplifies that to ~1e-5 per step; our float64-built abar is ~50x closer to exact.
    """
    diffusers = pytest.importorskip("diffusers")
    diffusion = GaussianDiffusion(DiffusionConfig(num_train_timesteps=num_train_timesteps))
    ref = diffusers.DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
    )
    ref.set_timesteps(num_steps)
    shape = (2, 1, 3, 3)
    ours = diffusion.sample(
        toy_denoiser, shape, num_steps, method="ddpm", generator=torch.Generator().manual_seed(1)
    )
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=generator)
    for t in ref.timesteps:
        x = ref.step(toy_denoiser(x, t.repeat(2)), t, x, generator=generator).prev_sample
    torch.testing.assert_close(ours, x, atol=atol, rtol=1e-5)


def test_q_sample_statistics_match_closed_form():
    diffusion, c, t = GaussianDiffusion(), 0.7, 300
    x0 = torch.full((20_000, 1), c)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    x_t = diffusion.q_sample(x0, torch.full((20_000,), t), noise)
    abar = diffusion.alphas_cumprod[t].item()
    std_error = math.sqrt((1 - abar) / 20_000)
    assert abs(x_t.mean().item() - math.sqrt(abar) * c) < 5 * std_error  # E[x_t] = sqrt(abar) x_0
    assert abs(x_t.var().item() - (1 - abar)) < 0.03 * (1 - abar)  # Var[x_t] = 1 - abar


def test_q_sample_broadcasts_per_sample_over_images_and_videos():
    diffusion = GaussianDiffusion()
    t = torch.tensor([0, 500, 999])
    for shape in [(3, 2, 4, 4), (3, 5, 2, 4, 4)]:
        x0, noise = torch.randn(shape), torch.randn(shape)
        x_t = diffusion.q_sample(x0, t, noise)
        for b in range(3):
            abar = diffusion.alphas_cumprod[t[b]]
            torch.testing.assert_close(x_t[b], abar.sqrt() * x0[b] + (1 - abar).sqrt() * noise[b])


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_predict_x0_eps_round_trip(prediction):
    diffusion = GaussianDiffusion(DiffusionConfig(prediction=prediction))
    generator = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 2, 8, 8, generator=generator), torch.randn(4, 3, 2, 8, 8, generator=generator)
    t = torch.tensor([0, 10, 600, 999])
    x_t = diffusion.q_sample(x0, t, eps)
    output = eps if prediction == "epsilon" else diffusion.velocity(x0, eps, t)
    x0_hat, eps_hat = diffusion.predict_x0_eps(output, x_t, t)
    torch.testing.assert_close(x0_hat, x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(eps_hat, eps, atol=1e-4, rtol=1e-4)


def test_velocity_is_rotation_of_x0_and_eps():
    """v^2 + x_t^2 = x_0^2 + eps^2 elementwise: (x_t, v) is (x_0, eps) rotated by the angle phi_t."""
    diffusion = GaussianDiffusion()
    x0, eps, t = torch.randn(3, 5), torch.randn(3, 5), torch.tensor([1, 400, 900])
    v, x_t = diffusion.velocity(x0, eps, t), diffusion.q_sample(x0, t, eps)
    torch.testing.assert_close(v**2 + x_t**2, x0**2 + eps**2)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_loss_is_deterministic_scalar_and_near_one_for_zero_model(prediction):
    diffusion = GaussianDiffusion(DiffusionConfig(prediction=prediction))
    x0 = torch.zeros(64, 4, 1, 8, 8)  # x_0 = 0 so the target has unit variance for eps (<= 1 for v)
    seen = {}

    def zero_model(x_t, t, context):
        seen.update(t=t, context=context)
        return torch.zeros_like(x_t)

    losses = [diffusion.loss(zero_model, x0, torch.Generator().manual_seed(5), context="y") for _ in range(2)]
    assert losses[0].ndim == 0 and losses[0] == losses[1]
    assert seen["context"] == "y" and seen["t"].shape == (64,) and seen["t"].dtype == torch.long
    assert (0.9 < losses[0] < 1.1) if prediction == "epsilon" else (0.0 < losses[0] < 1.0)


def test_loss_backpropagates_and_rejects_wrong_output_shape():
    diffusion, weight = GaussianDiffusion(), torch.ones(1, requires_grad=True)
    diffusion.loss(lambda x_t, t: weight * x_t, torch.randn(2, 3, 4, 4)).backward()
    assert weight.grad is not None and weight.grad.abs() > 0
    with pytest.raises(ValueError, match="output shape"):
        diffusion.loss(lambda x_t, t: x_t[:, :1], torch.randn(2, 3, 4, 4))


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
@pytest.mark.parametrize("num_steps", [1, 7, 50])
def test_ddim_recovers_single_data_point(prediction, num_steps):
    diffusion = GaussianDiffusion(DiffusionConfig(prediction=prediction))
    x_star = torch.rand(2, 3, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (B, F, C, H, W)
    denoise = exact_eps_denoiser(diffusion, x_star)
    sample = diffusion.sample(denoise, x_star.shape, num_steps, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(sample, x_star, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("method", "eta"), [("ddim", 0.0), ("ddim", 0.5), ("ddpm", 0.0)])
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 4, 3, 8, 8)])
def test_sampler_shapes_and_seeded_determinism(method, eta, shape):
    diffusion = GaussianDiffusion()

    def run(seed):
        return diffusion.sample(
            toy_denoiser, shape, 5, eta, method, generator=torch.Generator().manual_seed(seed)
        )

    first = run(0)
    assert first.shape == shape and torch.isfinite(first).all()
    assert torch.equal(first, run(0))
    assert not torch.allclose(first, run(1))


def test_sampler_passes_batched_long_timesteps_descending():
    seen = []
    GaussianDiffusion().sample(lambda x, t: seen.append(t) or torch.zeros_like(x), (3, 2, 2, 2), num_steps=4)
    assert [t[0].item() for t in seen] == [750, 500, 250, 0]
    assert all(t.shape == (3,) and t.dtype == torch.long and (t == t[0]).all() for t in seen)


def test_progress_bar_counts_denoising_steps(capsys):
    GaussianDiffusion().sample(toy_denoiser, (1, 1, 2, 2), num_steps=3, progress=True)
    err = capsys.readouterr().err
    assert "ddim sampling" in err and "3/3" in err


def test_buffers_follow_module():
    diffusion = GaussianDiffusion().double()
    buffers = dict(diffusion.named_buffers())
    assert set(buffers) == {"betas", "alphas_cumprod"} and buffers["betas"].dtype == torch.float64
    assert diffusion.state_dict() == {}  # derived from the config, not saved


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_steps": 0},
        {"num_steps": 1001},
        {"eta": -0.1},
        {"method": "euler"},
        {"method": "ddpm", "eta": 0.5},
    ],
)
def test_sample_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        GaussianDiffusion().sample(toy_denoiser, (1, 1, 2, 2), **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_train_timesteps": 0},
        {"schedule": "quadratic"},
        {"beta_start": 0.02, "beta_end": 0.01},
        {"beta_end": 1.0},
        {"prediction": "x0"},
        {"cfg_dropout": 1.5},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        DiffusionConfig(**kwargs)


def test_bad_timesteps_and_noise_raise():
    diffusion, x0 = GaussianDiffusion(), torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="shape"):
        diffusion.q_sample(x0, torch.tensor([1, 2, 3]), x0)
    with pytest.raises(ValueError, match="lie in"):
        diffusion.q_sample(x0, torch.tensor([0, 1000]), x0)
    with pytest.raises(ValueError, match="noise shape"):
        diffusion.q_sample(x0, torch.tensor([0, 1]), x0[:, :1])


def cfg_setup():
    generator = torch.Generator().manual_seed(0)
    x_t, t = torch.randn(2, 3, 2, 4, 4, generator=generator), torch.tensor([10, 20])
    context, uncond = torch.randn(2, 5, 8, generator=generator), torch.randn(1, 5, 8, generator=generator)
    calls = []

    def model(x, t, context, fps=None):
        calls.append(x.shape[0])
        out = x * context.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1) + t.view(-1, 1, 1, 1, 1) / 100
        return out if fps is None else out * fps.view(-1, 1, 1, 1, 1)

    return model, x_t, t, context, uncond, calls


def test_guidance_scale_one_is_exactly_conditional_and_one_pass():
    model, x_t, t, context, uncond, calls = cfg_setup()
    out = classifier_free_guidance(model, x_t, t, context, uncond, 1.0)
    assert torch.equal(out, model(x_t, t, context)) and calls == [2, 2]


def test_guidance_matches_two_separate_passes_in_one_batched_call():
    model, x_t, t, context, uncond, calls = cfg_setup()
    fps = torch.tensor([2.0, 3.0])
    out = classifier_free_guidance(model, x_t, t, context, uncond, 7.5, fps=fps)
    assert calls == [4]
    eps_cond = model(x_t, t, context, fps=fps)
    eps_uncond = model(x_t, t, uncond.expand(2, -1, -1), fps=fps)
    torch.testing.assert_close(out, eps_uncond + 7.5 * (eps_cond - eps_uncond))
    zero = classifier_free_guidance(model, x_t, t, context, uncond, 0.0, fps=fps)
    torch.testing.assert_close(zero, eps_uncond)  # s = 0 is the unconditional model


def test_guidance_rejects_mismatched_contexts():
    model, x_t, t, context, uncond, _ = cfg_setup()
    with pytest.raises(ValueError, match="uncond_context"):
        classifier_free_guidance(model, x_t, t, context, uncond[:, :3], 3.0)


def test_drop_condition_probability_and_seed():
    context, uncond = torch.randn(1000, 4, 8), torch.zeros(1, 4, 8)
    assert torch.equal(drop_condition(context, uncond, 0.0), context)
    assert torch.equal(drop_condition(context, uncond, 1.0), uncond.expand_as(context))
    dropped = drop_condition(context, uncond, 0.3, torch.Generator().manual_seed(0))
    is_dropped = (dropped == 0).all(dim=(1, 2))  # (B,)
    assert 0.25 < is_dropped.float().mean() < 0.35
    again = drop_condition(context, uncond, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(again, dropped)  # seeded
    with pytest.raises(ValueError):
        drop_condition(context, uncond, p=1.2)


def test_sample_from_a_midway_start_runs_only_the_later_steps():
    """start_at (SDEdit): at the grid's first step it is the whole run from x_T; lower, the steps above it are
    skipped, so a denoiser that counts its calls sees fewer; without x_T it is refused."""
    diffusion, shape = GaussianDiffusion(), (2, 3, 4, 4)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    calls = []

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(int(t[0]))
        return 0.1 * x

    grid = diffusion.timesteps(10)
    whole = diffusion.sample(denoise, shape, 10, x_T=x_T)
    same = diffusion.sample(denoise, shape, 10, x_T=x_T, start_at=grid[0])
    torch.testing.assert_close(whole, same)
    calls.clear()
    late = diffusion.sample(denoise, shape, 10, x_T=x_T, start_at=grid[4])
    assert calls == grid[4:] and (late - whole).abs().max() > 1e-3
    with pytest.raises(ValueError, match="needed with start_at"):
        diffusion.sample(denoise, shape, 10, start_at=grid[4])
