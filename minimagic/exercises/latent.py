"""Checkers for the exercises of notebooks 01 (VAE) and 02 (diffusion): graded against vae.py, diffusion.py
and guidance.py on seeded random inputs (see grading.py for how a checker reports)."""

from collections.abc import Callable

import torch

from minimagic.diffusion import DiffusionConfig, GaussianDiffusion, make_betas
from minimagic.exercises.grading import Fault, grade, named
from minimagic.guidance import classifier_free_guidance
from minimagic.vae import DiagonalGaussian


def _randn(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=generator)


def _posteriors(seed: int = 0) -> list[dict]:
    """Moments of q(z|x) for (B, c, h, w) latents; the log-variances span small and large spreads."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(2, 4, 3, 3), (3, 4, 5, 2)]
    return [{"mean": _randn(g, *s), "logvar": _randn(g, *s) * 2 - 1} for s in shapes]


def check_reparameterise(student: Callable) -> bool:
    """reparameterise(mean, logvar, noise) -> z = mean + exp(logvar / 2) * noise, as DiagonalGaussian.sample."""
    trials = [{**p, "noise": torch.randn(p["mean"].shape, generator=torch.Generator().manual_seed(i))}
              for i, p in enumerate(_posteriors())]

    def package(mean, logvar, noise):
        posterior = DiagonalGaussian(torch.cat([mean, logvar], dim=1))  # the encoder's moments (B, 2c, h, w)
        return posterior.mean + posterior.std * noise  # DiagonalGaussian.sample with this noise

    faults = [
        Fault("used the variance exp(logvar) instead of the standard deviation exp(logvar / 2)",
              lambda mean, logvar, noise: mean + logvar.exp() * noise),
        Fault("used logvar itself as the standard deviation: take exp(logvar / 2)",
              lambda mean, logvar, noise: mean + logvar * noise),
        Fault("returned the mean: the noise is missing", lambda mean, logvar, noise: mean),
    ]
    return grade(named(student, "reparameterise"), student, package, trials, faults)


def check_kl(student: Callable) -> bool:
    """kl_divergence(mean, logvar) -> (B,) KL(q || N(0, I)) per sample, as DiagonalGaussian.kl."""

    def package(mean, logvar):
        return DiagonalGaussian(torch.cat([mean, logvar], dim=1)).kl()

    def terms(mean, logvar):  # the summand of the KL, (B, c, h, w)
        return 0.5 * (mean**2 + logvar.exp() - 1 - logvar)

    faults = [
        Fault("averaged over the latent numbers instead of summing them", lambda mean, logvar: terms(mean, logvar)
              .flatten(1).mean(1)),
        Fault("the factor 1/2 is missing", lambda mean, logvar: 2 * terms(mean, logvar).flatten(1).sum(1)),
        Fault("used the standard deviation exp(logvar / 2) where the variance exp(logvar) belongs",
              lambda mean, logvar: (0.5 * (mean**2 + (logvar / 2).exp() - 1 - logvar)).flatten(1).sum(1)),
        Fault("sign error: the KL is 1/2 sum(mu^2 + sigma^2 - 1 - log sigma^2)",
              lambda mean, logvar: (0.5 * (mean**2 + logvar.exp() - 1 + logvar)).flatten(1).sum(1)),
    ]
    return grade(named(student, "kl_divergence"), student, package, _posteriors(1), faults, rtol=1e-4)


def _noising_trials() -> list[dict]:
    """x0, t, noise and the betas of the default schedule; the first input has B == W, so that a (B,)
    coefficient broadcast over the last axis gives wrong values instead of an error."""
    betas = make_betas(DiffusionConfig()).float()
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 3, 2, 4), (3, 2, 4, 5, 5)]  # an image batch (B, c, h, w) and a video batch (B, F, c, h, w)
    return [{"x0": _randn(g, *s), "t": torch.randint(0, 1000, (s[0],), generator=g), "noise": _randn(g, *s),
             "betas": betas} for s in shapes]


def _view(coefficient: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return coefficient.view(-1, *[1] * (x.ndim - 1))  # (B, 1, ..., 1)


def check_q_sample(student: Callable) -> bool:
    """q_sample(x0, t, noise, betas) -> x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, as GaussianDiffusion."""
    diffusion = GaussianDiffusion(DiffusionConfig())

    def package(x0, t, noise, betas):
        return diffusion.q_sample(x0, t, noise)

    def with_abar(abar, x0, noise):
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    faults = [
        Fault("used alpha_t = 1 - beta_t instead of alpha-bar_t = prod_{s <= t} (1 - beta_s)",
              lambda x0, t, noise, betas: with_abar(_view(1 - betas[t], x0), x0, noise)),
        Fault("the square roots are missing: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps",
              lambda x0, t, noise, betas: _view(torch.cumprod(1 - betas, 0)[t], x0) * x0
              + (1 - _view(torch.cumprod(1 - betas, 0)[t], x0)) * noise),
        Fault("abar_t is broadcast over the last axis, not the batch: view it as (B, 1, ..., 1)",
              lambda x0, t, noise, betas: with_abar(torch.cumprod(1 - betas, 0)[t], x0, noise)),
        Fault("used abar at t + 1 (or a 1-based t): index the cumulative product at t",
              lambda x0, t, noise, betas: with_abar(_view(torch.cumprod(1 - betas, 0)[(t + 1).clamp(max=999)], x0),
                                                    x0, noise)),
        Fault("signal and noise coefficients swapped",
              lambda x0, t, noise, betas: with_abar(_view(torch.cumprod(1 - betas, 0)[t], x0), noise, x0)),
    ]
    return grade(named(student, "q_sample"), student, package, _noising_trials(), faults)


def check_ddim_step(student: Callable) -> bool:
    """ddim_step(x_t, eps, abar_t, abar_prev) -> x_{t_prev} (eta = 0), checked by running whole DDIM samplings
    of GaussianDiffusion.sample with the student's step in place of the package's."""
    diffusion = GaussianDiffusion(DiffusionConfig())

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # a stand-in network: eps depends on x and t
        return 0.6 * x + 0.2 * torch.sin(x + _view(t.float() / 100, x))

    def sample(step: Callable, shape: tuple, num_steps: int, seed: int) -> torch.Tensor:
        steps = diffusion.timesteps(num_steps)
        abar = torch.cat([diffusion.alphas_cumprod[steps], torch.ones(1)])  # then 1 after the last step
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))  # x_T, drawn as the package draws it
        for i, t in enumerate(steps):
            eps = denoise(x, torch.full((shape[0],), t))
            x = step(x, eps, abar[i], abar[i + 1])  # (x_t, eps, abar_t, abar_prev)
        return x

    def package(shape, num_steps, seed):
        return diffusion.sample(denoise, shape, num_steps, generator=torch.Generator().manual_seed(seed))

    def student_sampling(shape, num_steps, seed):
        return sample(student, shape, num_steps, seed)

    def x0_hat(x_t, eps, abar_t):
        return (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()

    wrong_steps = [
        ("returned the x_0 estimate, not x_{t_prev} = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev) eps",
         lambda x_t, eps, abar_t, abar_prev: x0_hat(x_t, eps, abar_t)),
        ("the direction term uses sqrt(1 - abar_t); it must use sqrt(1 - abar_prev)",
         lambda x_t, eps, abar_t, abar_prev: abar_prev.sqrt() * x0_hat(x_t, eps, abar_t) + (1 - abar_t).sqrt() * eps),
        ("the square root on abar_prev is missing in sqrt(abar_prev) x0_hat",
         lambda x_t, eps, abar_t, abar_prev: abar_prev * x0_hat(x_t, eps, abar_t) + (1 - abar_prev).sqrt() * eps),
        ("x0_hat divides by abar_t; it must divide by sqrt(abar_t)",
         lambda x_t, eps, abar_t, abar_prev: abar_prev.sqrt() * (x_t - (1 - abar_t).sqrt() * eps) / abar_t
         + (1 - abar_prev).sqrt() * eps),
    ]
    faults = [Fault(message, lambda shape, num_steps, seed, step=step: sample(step, shape, num_steps, seed))
              for message, step in wrong_steps]
    trials = [{"shape": (2, 4, 4, 4), "num_steps": 1, "seed": 0}, {"shape": (2, 4, 4, 4), "num_steps": 5, "seed": 1},
              {"shape": (1, 3, 4, 3, 3), "num_steps": 10, "seed": 2}]
    return grade(named(student, "ddim_step"), student_sampling, package, trials, faults, atol=1e-4)


def check_guidance(student: Callable) -> bool:
    """guided_eps(eps_cond, eps_uncond, guidance_scale) -> eps~, as guidance.classifier_free_guidance."""
    g = torch.Generator().manual_seed(0)

    def model(x, t, context):  # a stand-in network whose output depends on the caption
        return x * context.mean(dim=(1, 2)).view(-1, 1, 1, 1) + context[:, :1, :1, None]

    trials = []
    for scale in (7.5, 4.0, 0.5):
        x, t = _randn(g, 3, 4, 2, 2), torch.randint(0, 1000, (3,), generator=g)
        context, uncond = _randn(g, 3, 5, 8), _randn(g, 1, 5, 8)
        trials.append({"x": x, "t": t, "context": context, "uncond": uncond, "guidance_scale": scale})

    def package(x, t, context, uncond, guidance_scale):
        return classifier_free_guidance(model, x, t, context, uncond, guidance_scale)

    def from_predictions(combine):
        def run(x, t, context, uncond, guidance_scale):
            eps_cond, eps_uncond = model(x, t, context), model(x, t, uncond.expand_as(context))
            return combine(eps_cond, eps_uncond, guidance_scale)
        return run

    faults = [
        Fault("conditional and unconditional predictions swapped",
              from_predictions(lambda eps_cond, eps_uncond, guidance_scale:
                               eps_cond + guidance_scale * (eps_uncond - eps_cond))),
        Fault("started from eps_cond: eps~ = eps_uncond + s (eps_cond - eps_uncond) starts from the unconditional one",
              from_predictions(lambda eps_cond, eps_uncond, guidance_scale:
                               eps_cond + guidance_scale * (eps_cond - eps_uncond))),
        Fault("the guidance scale is not used", from_predictions(lambda eps_cond, eps_uncond, guidance_scale:
                                                                  2 * eps_cond - eps_uncond)),
    ]
    return grade(named(student, "guided_eps"), from_predictions(student), package, trials, faults)
