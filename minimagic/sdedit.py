"""Latents like the sampler's, each paired with the real clip it came from: the VideoVAE's training pairs
for generated clips (docs/paper.md §5), made the SDEdit way (Meng et al. 2022).

A decoder trained on the encoder's latents never sees the small per-frame errors that a sampler leaves in
its latents, and those errors are what a generated clip flickers with. SDEdit makes latents that carry them
and still have a known ground truth. The latents z_0 of a real training clip are noised to a mid timestep
t_s of the sampler's grid (t_s uniform over the grid points in [t_lo, t_hi]),

    z_{t_s} = sqrt(abar_{t_s}) z_0 + sqrt(1 - abar_{t_s}) eps,

and the text-to-video model denoises them with the clip's caption over the sampler's remaining DDIM steps,
with its guidance and eta. The result z^_0 has the sampler's errors; the real clip x is its target: the
VideoVAE learns D(z^_0) ~ x. Pairs are made once and cached in `data/cache/` (atomic write), keyed by the
settings and the model's weights.
"""

from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from minimagic.checkpoint import atomic_write, fingerprint
from minimagic.clips import MAX_CLIPS, captions, encode_clips
from minimagic.guidance import classifier_free_guidance
from minimagic.paths import CACHE_DIR, DEFAULT_FPS
from minimagic.pipeline import TextToVideoPipeline


@dataclass(frozen=True)
class PairSettings:
    """Which training clips become pairs and how their latents are noised and denoised."""

    num_clips: int = 1000  # training clips 0..N-1 of MovingDigits("train", seed 0)
    t_low: int = 200  # t_s is drawn from the grid points in [t_low, t_high]
    t_high: int = 400
    num_steps: int = 50  # the sampler's grid: diffusion.timesteps(num_steps), as `generate` samples
    guidance_scale: float = 7.5
    eta: float = 1.0  # DDIM's eta: 1 adds fresh noise at every step, like `generate`

    def __post_init__(self):
        if not 1 <= self.num_clips <= MAX_CLIPS:
            raise ValueError(f"num_clips must be in [1, {MAX_CLIPS}], got {self.num_clips}")
        if not 0 <= self.t_low <= self.t_high:
            raise ValueError(f"need 0 <= t_low <= t_high, got {self.t_low}, {self.t_high}")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if not 0 <= self.guidance_scale <= 50 or self.eta < 0:
            raise ValueError(f"need guidance_scale in [0, 50] and eta >= 0, got {self.guidance_scale}, {self.eta}")

    def start_times(self, pipe: TextToVideoPipeline) -> list[int]:
        """The grid points t_s may start from."""
        grid = [t for t in pipe.diffusion.timesteps(self.num_steps) if self.t_low <= t <= self.t_high]
        if not grid:
            raise ValueError(f"no timestep of the {self.num_steps}-step grid lies in [{self.t_low}, {self.t_high}]")
        return grid


@torch.no_grad()
def sdedit(pipe: TextToVideoPipeline, latents: torch.Tensor, prompts: list[str], t_start: int,
           settings: PairSettings, generator: torch.Generator) -> torch.Tensor:
    """Clean latents (B, F, c, h, w) noised to `t_start` and denoised by DDIM over the grid's steps t <= t_start
    (`GaussianDiffusion.sample` with start_at, Song et al. 2021, Eq. 12) -> z^_0 (B, F, c, h, w)."""
    diffusion, device, B = pipe.diffusion, pipe.device, latents.shape[0]
    context, _ = pipe.text_encoder.encode(prompts)  # (B, L, D)
    uncond, _ = pipe.text_encoder.uncond(1)  # (1, L, D)
    fps = torch.full((B,), DEFAULT_FPS, device=device)

    def denoise(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return classifier_free_guidance(pipe.unet, z_t, t, context.to(device), uncond.to(device),
                                        settings.guidance_scale, fps=fps)

    noise = torch.randn(latents.shape, generator=generator).to(device)
    x = diffusion.q_sample(latents.to(device), torch.full((B,), t_start, device=device), noise)  # z_{t_s}
    return diffusion.sample(denoise, tuple(x.shape), settings.num_steps, eta=settings.eta, generator=generator,
                            device=device, x_T=x, start_at=t_start).cpu()


def make_pairs(pipe: TextToVideoPipeline, settings: PairSettings, batch_size: int = 16,
               cache_dir=CACHE_DIR) -> dict[str, torch.Tensor]:
    """{"latents": z^_0 (N, F, c, h, w), "timesteps": t_s (N,)} for training clips 0..N-1, whose videos
    (MovingDigits("train")[i]) are the targets; cached, and a corrupt cache file is made again."""
    if not pipe.is_video:
        raise ValueError("SDEdit pairs need a text-to-video pipeline, got a text-to-image one")
    s = settings
    name = (f"pairs-train-{s.num_clips}x{pipe.unet.num_frames}-t{s.t_low}-{s.t_high}-ddim{s.num_steps}"
            f"-g{s.guidance_scale:g}-eta{s.eta:g}-t2v{fingerprint(pipe.unet)}-vae{fingerprint(pipe.vae)}")
    path = cache_dir / f"{name}.safetensors"
    if path.is_file():
        try:
            return load_file(path)
        except (SafetensorError, OSError):
            tqdm.write(f"{path} is corrupt: making the pairs again")
    clips = encode_clips(pipe.vae, "train", s.num_clips, pipe.unet.num_frames, cache_dir=cache_dir)
    prompts = captions(clips["digits"], clips["directions"])
    generator, grid = torch.Generator().manual_seed(0), torch.tensor(s.start_times(pipe))
    latents, timesteps = [], []
    for start in tqdm(range(0, s.num_clips, batch_size), desc="SDEdit pairs"):
        t_start = grid[torch.randint(len(grid), (1,), generator=generator)].item()  # one t_s per batch
        chunk = clips["latents"][start : start + batch_size].float()  # (B, F, c, h, w)
        latents.append(sdedit(pipe, chunk, prompts[start : start + batch_size], t_start, s, generator))
        timesteps.append(torch.full((len(chunk),), t_start))
    result = {"latents": torch.cat(latents), "timesteps": torch.cat(timesteps)}
    atomic_write(path, lambda tmp: save_file(result, tmp))
    return result
