"""Moving-digit clips encoded once into the VAE's latent space.

MagicVideo's denoiser never sees pixels: z = [E(x^1), ..., E(x^F)] (docs/paper.md §1). Encoding the training
clips once, before diffusion training, keeps the VAE out of the training loop (minutes instead of
hours on a CPU). The result is cached in `data/cache/`, keyed by the VAE's weights.
"""

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from minimagic.data import DATA_DIR, MovingDigits, caption_for
from minimagic.vae import VAE

CACHE_DIR = DATA_DIR / "cache"


def fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's weights, so caches made with other weights are never reused."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


@torch.no_grad()
def encode_clips(vae: VAE, split: str = "train", num_clips: int = 4000, num_frames: int = 8, seed: int = 0,
                 batch_size: int = 64, cache_dir: Path | None = CACHE_DIR) -> dict[str, torch.Tensor]:
    """Scaled latents `(N, F, c, h, w)` of clips 0..N-1 of MovingDigits(split, seed), with their labels
    `digits (N,)` and `directions (N,)` (captions follow from them through `caption_for`)."""
    name = f"{split}-{num_clips}x{num_frames}-seed{seed}-vae{fingerprint(vae)}.safetensors"
    path = cache_dir / name if cache_dir is not None else None
    if path is not None and path.is_file():
        return load_file(path)
    clips = MovingDigits(split, num_frames=num_frames, length=num_clips, seed=seed)
    device = next(vae.parameters()).device
    latents, digits, directions = [], [], []
    for start in tqdm(range(0, num_clips, batch_size), desc=f"encode {split} clips"):
        items = [clips[i] for i in range(start, min(start + batch_size, num_clips))]
        video = torch.stack([item["video"] for item in items]).to(device)  # (B, F, 1, H, W)
        latents.append(vae.encode_video(video).cpu())  # (B, F, c, h, w)
        digits += [item["digit"] for item in items]
        directions += [item["direction"] for item in items]
    result = {"latents": torch.cat(latents), "digits": torch.tensor(digits), "directions": torch.tensor(directions)}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(result, path)
    return result


def captions(digits: torch.Tensor, directions: torch.Tensor | None) -> list[str]:
    """Video captions ("the digit seven moves left"), or image captions when `directions` is None."""
    if directions is None:
        return [caption_for([d], None) for d in digits.tolist()]
    return [caption_for([d], [k]) for d, k in zip(digits.tolist(), directions.tolist(), strict=True)]
