"""Reference solutions of the notebook exercises: one way to write each piece, graded `passed` by its checker.

Read them after trying: each is the formula of the notebook written with plain tensor operations.
"""

import torch
import torch.nn.functional as F
from einops import rearrange


# 01 · VAE
def reparameterise(mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps with sigma = exp(logvar / 2): a sample of q(z|x) that gradients flow through."""
    return mean + torch.exp(0.5 * logvar) * noise


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) = 1/2 sum(mu^2 + sigma^2 - 1 - log sigma^2), one value per sample (B,)."""
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar).flatten(1).sum(1)


# 02 · diffusion
def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps with abar_t = prod_{s <= t} (1 - beta_s)."""
    abar = torch.cumprod(1 - betas, dim=0)[t]  # (B,)
    abar = abar.view(-1, *[1] * (x0.ndim - 1))  # (B, 1, ..., 1): one coefficient per sample
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor, abar_prev: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step (eta = 0): estimate x_0, then move to the noise level of t_prev."""
    x0_hat = (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
    return abar_prev.sqrt() * x0_hat + (1 - abar_prev).sqrt() * eps


def guided_eps(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: eps~ = eps(z_t, "") + s (eps(z_t, y) - eps(z_t, ""))."""
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


# 03 · FrameAdaptor
def frame_adaptor(z: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """z_i <- S_i * z_i + B_i for z (B, F, C, H, W) and S, B (F_max, C): row i for frame i."""
    F = z.shape[1]
    return z * scale[:F, :, None, None] + shift[:F, :, None, None]  # (F, C, 1, 1) broadcast over B, H, W


# 04 · directed temporal attention
def causal_mask(num_frames: int) -> torch.Tensor:
    """M (F, F): True where query frame p may attend to key frame q, i.e. q <= p."""
    return torch.ones(num_frames, num_frames, dtype=torch.bool).tril()


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) + log M) V over the frame axis; q, k, v (N, heads, F, d)."""
    logits = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # (N, heads, F, F)
    logits = logits.masked_fill(~causal_mask(q.shape[2]), float("-inf"))  # log M: -inf where q > p
    return logits.softmax(dim=-1) @ v  # (N, heads, F, d)


# 07 · VideoVAE
def temporal_residual(h: torch.Tensor, attention: torch.nn.Module, num_frames: int) -> torch.Tensor:
    """h + T-Attn(h) for decoder features h (B*F, C, H, W): unfold the frames, attend along them, fold back."""
    branch = attention(rearrange(h, "(b f) c x y -> b f c x y", f=num_frames))  # (B, F, C, H, W)
    return h + rearrange(branch, "b f c x y -> (b f) c x y")


def flicker(video: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean |(x^_{i+1} - x^_i) - (x_{i+1} - x_i)| over pixels and frame pairs of (B, F, C, H, W) videos."""
    return ((video[:, 1:] - video[:, :-1]) - (reference[:, 1:] - reference[:, :-1])).abs().mean().item()


# 08 · frame interpolation
def interpolation_conditioning(keyframes: torch.Tensor, num_between: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keyframes (B, 2, c, h, w) -> zhat (B, k+2, c, h, w), zhat_i = (1 - a_i) z^a + a_i z^b with a_i = i / (k+1),
    and the mask (B, k+2), True at the two keyframes."""
    a = torch.linspace(0, 1, num_between + 2)[None, :, None, None, None]  # (1, k+2, 1, 1, 1)
    known = (1 - a) * keyframes[:, :1] + a * keyframes[:, 1:]  # (B, k+2, c, h, w)
    mask = torch.zeros(keyframes.shape[0], num_between + 2, dtype=torch.bool)
    mask[:, [0, -1]] = True
    return known, mask


# 09 · evaluation
def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """d^2 = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2}) for features a (N, D), b (M, D)."""

    def sqrtm(matrix: torch.Tensor) -> torch.Tensor:  # symmetric square root of a PSD matrix
        values, vectors = torch.linalg.eigh(matrix)
        return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T

    a, b = a.double(), b.double()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)  # (D, D), normalised by N - 1
    root_a = sqrtm(cov_a)
    trace_root = sqrtm(root_a @ cov_b @ root_a).trace()  # tr (S_1^{1/2} S_2 S_1^{1/2})^{1/2}
    d2 = (a.mean(0) - b.mean(0)).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_root
    return d2.item()


# 12 · super-resolution
def superres_input(x_t: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
    """[x_t ; up(y)] (N, 2C, H, W): the noisy frame, then the low-resolution frame upsampled 2x bicubically and
    clamped to [-1, 1]."""
    up = F.interpolate(low_res, scale_factor=2, mode="bicubic", align_corners=False).clamp(-1, 1)  # (N, C, H, W)
    return torch.cat([x_t, up], dim=1)
