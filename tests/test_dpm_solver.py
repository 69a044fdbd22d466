"""DPM-Solver++ (2M): equal to diffusers' DPMSolverMultistepScheduler, more accurate than DDIM, bad input."""

import importlib.util
from pathlib import Path

import pytest
import torch

from minimagic.diffusion import DiffusionConfig, GaussianDiffusion
from minimagic.pipeline import TextToVideoPipeline
from minimagic.text import TextEncoder
from minimagic.unet import UNet2D, UNetConfig
from minimagic.vae import VAE, VAEConfig
from minimagic.video_unet import VideoUNet


def random_linear_denoiser(shape: tuple[int, ...]):
    """A fixed random network output tanh(W x) + a t-dependent shift, for eps or v."""
    size = torch.Size(shape[1:]).numel()
    weight = torch.randn(size, size, generator=torch.Generator().manual_seed(7)) / size**0.5

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        shift = 0.1 * torch.sin(t.float() / 100).view(-1, *[1] * (x.ndim - 1))
        return torch.tanh(x.flatten(1) @ weight).view_as(x) + shift

    return denoise


def diffusers_scheduler(algorithm: str, prediction: str, timesteps: list[int]):
    """diffusers' DPMSolverMultistepScheduler set up like minimagic's solver, on our ("leading") timesteps."""
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DPMSolverMultistepScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, algorithm_type=algorithm,
        solver_order=2, lower_order_final=True, final_sigmas_type="zero",
        prediction_type="epsilon" if prediction == "epsilon" else "v_prediction",
    )
    scheduler.set_timesteps(timesteps=timesteps)  # DDIM's "leading" steps, steps_offset=0
    return scheduler


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
@pytest.mark.parametrize("num_steps", [3, 10, 25])
def test_dpm_solver_matches_diffusers(prediction, num_steps):
    """Whole trajectories from one x_T vs DPMSolverMultistepScheduler (dpmsolver++, order 2) on our timesteps;
    num_steps=3: a first-order step, one second-order step, then the last (first-order) step to abar = 1."""
    diffusion = GaussianDiffusion(DiffusionConfig(prediction=prediction))
    ref = diffusers_scheduler("dpmsolver++", prediction, diffusion.timesteps(num_steps))
    shape = (2, 3, 4, 4)
    denoise = random_linear_denoiser(shape)
    ours = diffusion.sample(denoise, shape, num_steps, method="dpm++2m", generator=torch.Generator().manual_seed(1))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    for t in ref.timesteps:
        x = ref.step(denoise(x, t.repeat(2)), t, x).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-5, rtol=1e-5)
    ddim = diffusion.sample(denoise, shape, num_steps, generator=torch.Generator().manual_seed(1))
    assert (ours - ddim).abs().max() > 1e-2  # a second-order step changes the result


@pytest.mark.parametrize("num_steps", [5, 10])
def test_dpm_solver_is_closer_than_ddim_to_the_exact_ode_solution(num_steps):
    """Data x_0 ~ N(0, s^2 I) has the exact eps(x_t) = sqrt(1 - abar) x_t / std_t^2, std_t^2 = abar s^2 + 1 - abar,
    and the probability-flow ODE keeps x_t / std_t fixed: x_0 = s x_T / std_T. At equal steps the
    second-order solver lands at least twice as close as DDIM."""
    diffusion, s = GaussianDiffusion(), 0.3

    def exact_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = diffusion.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (1 - abar).sqrt() * x / (abar * s**2 + 1 - abar)

    shape = (4, 1, 4, 4)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    abar_T = diffusion.alphas_cumprod[diffusion.timesteps(num_steps)[0]]
    exact = s * x_T / (abar_T * s**2 + 1 - abar_T).sqrt()
    error = {method: (diffusion.sample(exact_eps, shape, num_steps, method=method,
                                       generator=torch.Generator().manual_seed(0)) - exact).abs().mean()
             for method in ("ddim", "dpm++2m")}
    assert error["dpm++2m"] < 0.5 * error["ddim"]


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
@pytest.mark.parametrize("num_steps", [3, 25])
def test_sde_dpm_solver_matches_diffusers(prediction, num_steps):
    """eta = 1: the SDE variant vs diffusers' sde-dpmsolver++ (midpoint), both drawing x_T and then one noise per
    step from generators seeded alike; a different eta or seed gives another sample."""
    diffusion = GaussianDiffusion(DiffusionConfig(prediction=prediction))
    ref = diffusers_scheduler("sde-dpmsolver++", prediction, diffusion.timesteps(num_steps))
    shape = (2, 3, 4, 4)
    denoise = random_linear_denoiser(shape)

    def ours(eta: float, seed: int = 1) -> torch.Tensor:
        return diffusion.sample(denoise, shape, num_steps, eta=eta, method="dpm++2m",
                                generator=torch.Generator().manual_seed(seed))

    generator = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=generator)
    for t in ref.timesteps:
        x = ref.step(denoise(x, t.repeat(2)), t, x, generator=generator).prev_sample
    torch.testing.assert_close(ours(1.0), x, atol=1e-4, rtol=1e-4)  # float32 rounding over 25 noisy steps
    assert (ours(1.0) - ours(0.0)).abs().max() > 1e-2 and (ours(1.0) - ours(1.0, seed=2)).abs().max() > 1e-2
    assert (ours(0.5) - ours(1.0)).abs().max() > 1e-3


def test_dpm_solver_rejects_eta_and_unknown_sampler():
    diffusion = GaussianDiffusion()
    with pytest.raises(ValueError, match="dpm\\+\\+2m: <= 1"):
        diffusion.sample(lambda x, t: x, (1, 2), 3, eta=1.5, method="dpm++2m")
    with pytest.raises(ValueError, match="method must be one of"):
        diffusion.sample(lambda x, t: x, (1, 2), 3, method="dpm++3m")


@pytest.fixture(scope="module")
def pipe() -> TextToVideoPipeline:
    torch.manual_seed(0)
    text = TextEncoder()
    unet = VideoUNet.from_unet2d(UNet2D(UNetConfig.preset("tiny", context_dim=text.dim)), num_frames=2)
    for p in unet.parameters():  # non-zero everywhere, so that the network output depends on x_t
        p.data.add_(0.05 * torch.randn_like(p))
    return TextToVideoPipeline(unet, VAE(VAEConfig.preset("tiny")), text, image_size=16)


def test_pipeline_passes_the_sampler_through(pipe):
    """pipe(..., sampler=...) reaches the sampler: with 2 steps (both first order) DPM-Solver++ is DDIM,
    with 3 it takes one second-order step and differs."""
    latents = {(sampler, steps): pipe(["the digit one moves left"], num_inference_steps=steps, sampler=sampler,
                                      generator=torch.Generator().manual_seed(0), return_latents=True)
               for sampler in ("ddim", "dpm++2m") for steps in (2, 3)}
    torch.testing.assert_close(latents["dpm++2m", 2], latents["ddim", 2])
    assert (latents["dpm++2m", 3] - latents["ddim", 3]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="method must be one of"):
        pipe(["the digit one moves left"], num_inference_steps=2, sampler="euler")


def test_sampler_bench_times_both_samplers_in_turn(pipe, monkeypatch):
    spec = importlib.util.spec_from_file_location("samplers", Path(__file__).parents[1] / "bench" / "samplers.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.seconds_per_clip(pipe, "dpm++2m", 2, 4.0, num_clips=2) > 0  # the real timing runs
    calls = []
    monkeypatch.setattr(bench, "seconds_per_clip", lambda pipe, sampler, steps, *_: calls.append(sampler) or steps)
    result = bench.compare(pipe, ddim_steps=4, dpm_steps=2, rounds=2)
    assert calls == ["ddim", "dpm++2m"] * 2 and result["dpm_over_ddim"] == 0.5
