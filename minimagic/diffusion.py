"""The diffusion process of MagicVideo: z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps, loss and DDIM sampler.

Noise schedules, the DDPM loss (Ho et al. 2020, Eq. 14) and the DDIM / DDPM samplers (Song et al. 2021,
Eq. 12); the DPM-Solver++ (2M) sampler is in dpm_solver.py, classifier-free guidance in guidance.py.
Per-sample coefficients are viewed as (B, 1, ..., 1), so images (B, C, H, W) and videos (B, F, C, H, W) go
through the same code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from minimagic.dpm_solver import dpm_solver_2m
from minimagic.guidance import classifier_free_guidance, drop_condition  # re-exported

__all__ = ["DiffusionConfig", "GaussianDiffusion", "make_betas", "classifier_free_guidance", "drop_condition"]
SCHEDULES = ("linear", "scaled_linear", "cosine")
PREDICTIONS = ("epsilon", "v")
METHODS = ("ddim", "ddpm", "dpm++2m")


@dataclass
class DiffusionConfig:
    """The noise schedule beta_t, the network's target and the caption dropout used for guidance."""

    num_train_timesteps: int = 1000  # T; the timestep t runs over 0 .. T-1
    schedule: str = "scaled_linear"  # Stable Diffusion: beta_t = linspace(sqrt(beta_0), sqrt(beta_T-1))^2
    beta_start: float = 0.00085  # beta_0 (unused by "cosine")
    beta_end: float = 0.012  # beta_{T-1} (unused by "cosine")
    prediction: str = "epsilon"  # network target: eps, or v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0
    cfg_dropout: float = 0.1  # p(caption -> "") in training, so one network also learns eps(z_t, "") for CFG

    def __post_init__(self) -> None:
        if not isinstance(self.num_train_timesteps, int) or self.num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be an int >= 1, got {self.num_train_timesteps!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if not 0 <= self.cfg_dropout <= 1:
            raise ValueError(f"cfg_dropout must be in [0, 1], got {self.cfg_dropout}")


def make_betas(config: DiffusionConfig) -> Tensor:
    """beta_t for t = 0 .. T-1 in float64, the same values as diffusers' DDPMScheduler."""
    T = config.num_train_timesteps
    if config.schedule == "linear":
        return torch.linspace(config.beta_start, config.beta_end, T, dtype=torch.float64)
    if config.schedule == "scaled_linear":
        return torch.linspace(config.beta_start**0.5, config.beta_end**0.5, T, dtype=torch.float64) ** 2
    # cosine (Nichol & Dhariwal 2021, Eq. 17): f(t) = cos^2((t/T + s) / (1 + s) * pi/2), s = 0.008
    f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + 0.008) / 1.008 * math.pi / 2) ** 2
    # beta_t = 1 - f(t+1) / f(t), capped at 0.999 so that the last steps stay finite
    return (1 - f[1:] / f[:-1]).clamp(max=0.999)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """N(0, I) drawn on the generator's device, so that a seeded CPU generator also drives a GPU run."""
    return torch.randn(shape, generator=generator, device=_draw_device(generator, device)).to(device)


def _draw_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


class GaussianDiffusion(nn.Module):
    """The forward process q(x_t | x_0), the training loss and the DDIM / DDPM reverse samplers."""

    def __init__(self, config: DiffusionConfig | None = None) -> None:
        super().__init__()
        self.config = config or DiffusionConfig()
        self.num_timesteps = self.config.num_train_timesteps
        betas = make_betas(self.config)  # beta_t
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)  # \bar{alpha}_t = prod_{s <= t} (1 - beta_s)
        # buffers follow .to(device) but stay out of state_dict: the config rebuilds them
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)

    def _abar(self, t: Tensor, x: Tensor) -> Tensor:
        """\\bar{alpha}_t viewed as (B, 1, ..., 1), to broadcast over (C, H, W) or (F, C, H, W)."""
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
        if t.min() < 0 or t.max() >= self.num_timesteps:
            raise ValueError(f"t must lie in [0, {self.num_timesteps}), got [{int(t.min())}, {int(t.max())}]")
        abar = self.alphas_cumprod[t.to(self.alphas_cumprod.device)]  # (B,)
        return abar.to(x.device, x.dtype).view(-1, *[1] * (x.ndim - 1))  # (B, 1, ..., 1)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps  (Ho et al. 2020, Eq. 4)."""
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} must equal x0 shape {tuple(x0.shape)}")
        abar = self._abar(t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def velocity(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0  (Salimans & Ho 2022, Sec. 4)."""
        abar = self._abar(t, x0)
        return abar.sqrt() * noise - (1 - abar).sqrt() * x0

    def loss(
        self, model: Callable[..., Tensor], x0: Tensor, generator: torch.Generator | None = None, **cond
    ) -> Tensor:
        """|| target - model(x_t, t, **cond) ||^2, t ~ U{0..T-1}, eps ~ N(0, I)  (Ho et al. 2020, Eq. 14)."""
        B, device = x0.shape[0], _draw_device(generator, x0.device)
        t = torch.randint(0, self.num_timesteps, (B,), generator=generator, device=device).to(x0.device)
        noise = _randn(tuple(x0.shape), generator, x0.device).to(x0.dtype)  # eps
        target = noise if self.config.prediction == "epsilon" else self.velocity(x0, noise, t)
        output = model(self.q_sample(x0, t, noise), t, **cond)
        if output.shape != target.shape:
            raise ValueError(f"model output shape {tuple(output.shape)} != input shape {tuple(target.shape)}")
        return F.mse_loss(output, target)

    def predict_x0_eps(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Turn the network output (eps or v) into the pair (x_0 estimate, eps estimate)."""
        abar = self._abar(t, x_t)
        if self.config.prediction == "epsilon":
            # x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
            return (x_t - (1 - abar).sqrt() * model_output) / abar.sqrt(), model_output
        # x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v,  eps = sqrt(abar_t) v + sqrt(1 - abar_t) x_t
        x0 = abar.sqrt() * x_t - (1 - abar).sqrt() * model_output
        return x0, abar.sqrt() * model_output + (1 - abar).sqrt() * x_t

    def timesteps(self, num_steps: int) -> list[int]:
        """[0, k, 2k, ..] reversed with k = T // num_steps: diffusers' "leading" spacing, steps_offset=0."""
        if not 1 <= num_steps <= self.num_timesteps:
            raise ValueError(f"num_steps must be in [1, {self.num_timesteps}], got {num_steps}")
        k = self.num_timesteps // num_steps
        return [i * k for i in reversed(range(num_steps))]

    @torch.no_grad()
    def sample(
        self,
        denoise_fn: Callable[[Tensor, Tensor], Tensor],
        shape: tuple[int, ...],
        num_steps: int = 25,
        eta: float = 0.0,
        method: str = "ddim",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        progress: bool = False,
        x_T: Tensor | None = None,
        shared_noise: float = 0.0,
        start_at: int | None = None,
    ) -> Tensor:
        """Reverse process from x_T ~ N(0, I), or the given `x_T`; denoise_fn(x_t, t) returns eps or v for a (B,) t.

        "ddpm" samples the posterior q(x_{t_prev} | x_t, x_0) (Ho et al. 2020, Eqs. 6-7), which is DDIM with
        eta = 1 (Song et al. 2021, Sec. 4.1); num_steps = T runs the full chain. "dpm++2m" is DPM-Solver++ (2M)
        (dpm_solver.py) over the same timesteps, an ODE solver at eta = 0, its SDE variant for eta in (0, 1].
        `shared_noise` a > 0 starts a video (B, F, c, h, w) from the mixed noise prior x_T = sqrt(1 - a) eps_f +
        sqrt(a) eps_shared (Ge et al. 2023): every frame is still N(0, I), correlated by a; eps_f is a = 0's draw.
        `start_at` t_s runs only the steps t <= t_s, from the given x_T = z_{t_s} (SDEdit, Meng et al. 2022).
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if eta < 0 or (method == "ddpm" and eta not in (0.0, 1.0)) or (method == "dpm++2m" and eta > 1):
            raise ValueError(f"eta must be >= 0 for ddim (ddpm: 0 or 1, dpm++2m: <= 1), got {eta} for {method}")
        if not 0 <= shared_noise <= 1 or (shared_noise > 0 and len(shape) != 5):
            raise ValueError(f"shared_noise must be in [0, 1], and > 0 only for videos (B, F, c, h, w), got "
                             f"{shared_noise} for shape {tuple(shape)}")
        eta = 1.0 if method == "ddpm" else eta
        if (x_T is not None and tuple(x_T.shape) != tuple(shape)) or (start_at is not None and x_T is None):
            raise ValueError(f"x_T must have the sample shape {tuple(shape)} (and is needed with start_at), got "
                             f"{None if x_T is None else tuple(x_T.shape)}")
        device = torch.device(device) if device is not None else self.betas.device
        steps = [t for t in self.timesteps(num_steps) if start_at is None or t <= start_at]
        # \bar{alpha} of each step, then 1 after the last step (t = 0), so that x ends at the x_0 estimate
        abar = torch.cat([self.alphas_cumprod[steps], self.alphas_cumprod.new_ones(1)]).to(device)
        if x_T is not None:
            x = x_T.to(device)
        else:
            x = _randn(tuple(shape), generator, device)  # x_T; eps_f of every frame
        if shared_noise > 0:  # (B, 1, c, h, w), the same for all frames
            shared = _randn((shape[0], 1, *shape[2:]), generator, device)
            x = (1 - shared_noise) ** 0.5 * x + shared_noise**0.5 * shared
        if method == "dpm++2m":
            return dpm_solver_2m(self, denoise_fn, x, steps, progress, eta,
                                 draw_noise=lambda: _randn(tuple(shape), generator, device))
        for i, t in enumerate(tqdm(steps, desc=f"{method} sampling", disable=not progress)):
            t_batch = torch.full((shape[0],), t, dtype=torch.long, device=device)  # (B,)
            x0, eps = self.predict_x0_eps(denoise_fn(x, t_batch), x, t_batch)
            abar_t, abar_prev = abar[i], abar[i + 1]  # \bar{alpha}_t, \bar{alpha}_{t_prev}
            # sigma_t = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)  (DDIM, Eq. 16)
            sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).sqrt()
            # x_{t_prev} = sqrt(abar_prev) x_0 + sqrt(1 - abar_prev - sigma_t^2) eps + sigma_t z  (Eq. 12)
            x = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp(min=0).sqrt() * eps
            if eta > 0 and t > 0:
                x = x + sigma * _randn(tuple(shape), generator, device)
        return x
