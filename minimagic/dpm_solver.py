"""A faster sampler for MagicVideo's reverse process (docs/paper.md §6.2): DPM-Solver++ (2M), Lu et al. 2022.

Written with alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t) and the half log-SNR
lambda_t = log(alpha_t / sigma_t), the probability-flow ODE in terms of the x_0 estimate x_theta is solved
exactly in its linear part; each step from s to t (h = lambda_t - lambda_s > 0) is (Alg. 2 of the paper)

    x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) D,
    D = x_theta(x_s, s)                                          first order (= DDIM), first and last step
    D = (1 + 1/(2r)) x_theta(x_s, s) - 1/(2r) x_theta(x_{s'}, s')  second order, r = h_previous / h,

where s' is the step before s: one network call per step, like DDIM, but second-order accurate, so fewer
steps reach the same result. The last step goes to abar = 1 (sigma = 0) and returns the x_0 estimate, as
DDIM does. `GaussianDiffusion.sample(..., method="dpm++2m")` calls this.

With eta > 0 the solver follows the reverse SDE instead of the ODE (SDE-DPM-Solver++ (2M); eta = 1 is
diffusers' "sde-dpmsolver++" and k-diffusion's dpmpp_2m_sde): part of the way back is forgotten and replaced
by fresh noise z ~ N(0, I), as DDIM's eta does,

    x_t = (sigma_t / sigma_s) e^{-eta h} x_s - alpha_t (e^{-(1 + eta) h} - 1) D + sigma_t sqrt(1 - e^{-2 eta h}) z.
"""

from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm


def dpm_solver_2m(diffusion, denoise_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, steps: list[int],
                  progress: bool = False, eta: float = 0.0, draw_noise: Callable[[], Tensor] | None = None) -> Tensor:
    """Run DPM-Solver++ (2M) from x at steps[0] down to abar = 1; denoise_fn(x_t, t) returns eps or v.

    `diffusion` is the GaussianDiffusion whose schedule and `predict_x0_eps` are used; steps come from
    its `timesteps(num_steps)`, so both samplers visit the same t. eta > 0 needs `draw_noise()`, N(0, I) of
    x's shape, called once per step."""
    B, device = x.shape[0], x.device
    # \bar{alpha} of each step, then 1 after the last (t = 0)
    abar = torch.cat([diffusion.alphas_cumprod[steps], diffusion.alphas_cumprod.new_ones(1)]).to(device)
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()  # alpha_t, sigma_t
    log_snr = alpha.log() - sigma.log()  # lambda_t; +inf at the end, where e^{-h} = 0
    previous = None  # x_theta of the step before
    for i, t in enumerate(tqdm(steps, desc="dpm++2m sampling", disable=not progress)):
        t_batch = torch.full((B,), t, dtype=torch.long, device=device)  # (B,)
        x0, _ = diffusion.predict_x0_eps(denoise_fn(x, t_batch), x, t_batch)
        h = log_snr[i + 1] - log_snr[i]
        if previous is None or i == len(steps) - 1:
            D = x0  # first order: DDIM's step
        else:
            r = (log_snr[i] - log_snr[i - 1]) / h
            D = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * previous
        decay = torch.exp(-eta * h) if eta > 0 else 1.0  # e^{-eta h}, 1 for the ODE (also where h = inf)
        x = (sigma[i + 1] / sigma[i]) * decay * x - alpha[i + 1] * torch.expm1(-(1 + eta) * h) * D
        if eta > 0:
            x = x + sigma[i + 1] * (-torch.expm1(-2 * eta * h)).sqrt() * draw_noise()
        previous = x0
    return x
