"""The training clips of every stage, and their latents encoded once: z = [E(x^1), ..., E(x^F)] (docs/paper.md §1).

Moving digits (the default, captioned "the digit seven moves left", v = 8 fps) or the clips of a UCF-101-style
folder (captions from class names, "playing guitar", v = source fps / frame_stride, docs/paper.md §6.3). The
diffusion stages never see pixels: encoding the clips once, before training, keeps the VAE out of the
training loop (minutes instead of hours on a CPU). Latents are cached in `data/cache/`, keyed by the clips and
the VAE's weights, and written atomically: a killed encoding leaves no half file behind.
"""

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from minimagic.checkpoint import atomic_write, fingerprint, remove_leftovers
from minimagic.data import MovingDigits, caption_for
from minimagic.paths import CACHE_DIR, DEFAULT_FPS
from minimagic.vae import VAE
from minimagic.video import from_uint8, to_uint8
from minimagic.videofolder import DATA_PRESETS, VideoFolder, caption_from_class

MOVING_DIGITS = "moving-digits"
CLIPS_PER_VIDEO = 4  # random clips encoded per video of a folder (UCF-101 videos last 7 s on average)
MAX_CLIPS = 10**6  # Moving-digit clips a stage may encode (6,000 by default; 10**6 latents: about 1 GB)


@dataclass
class DataOptions:
    """The options of the stages that can train on a video folder (their --data, --data-root, --split-file)."""

    data: str = field(default=MOVING_DIGITS, metadata={"help": "training data: moving-digits (default), or ucf10 / "
                      "ucf10-256 (UCF-101 subsets, with --data-root; see minimagic/videofolder.py)"})
    data_root: str | None = field(default=None, metadata={
        "help": "the video folder: ROOT/<ClassName>/*.avi, e.g. the unpacked UCF-101"})
    split_file: str | None = field(default=None, metadata={
        "help": "only the videos listed in this file, e.g. ucfTrainTestlist/trainlist01.txt"})


def open_folder(data: str, data_root: str | None, split_file: str | None = None) -> VideoFolder | None:
    """None for Moving digits, else the data preset `data` of VideoFolder over `data_root`, checked now,
    before any model loads or clip is encoded."""
    if data == MOVING_DIGITS:
        if data_root is not None or split_file is not None:
            raise ValueError("--data-root and --split-file are for a video folder: add --data ucf10 (or ucf10-256)")
        return None
    if data not in DATA_PRESETS:
        raise ValueError(f"unknown data {data!r}; choose from {[MOVING_DIGITS, *sorted(DATA_PRESETS)]}")
    if data_root is None:
        raise ValueError(f"--data {data} needs --data-root: the folder holding the class folders (Biking/, ...)")
    return VideoFolder.preset(data, data_root, split_file=split_file)


class FolderFrames(Dataset):
    """The frames of a folder's center clips: item i is {"image": (3, H, W) in [-1, 1]}.

    All in memory as uint8 (ucf10's training split: about 100 MB), shuffled once (seed 0) so that any
    prefix, such as the frames the VAE's scale factor is measured on, spans every class."""

    def __init__(self, folder: VideoFolder):
        clips = [to_uint8(folder[i]["video"]) for i in tqdm(range(len(folder)), desc="decode clips")]
        frames = torch.cat(clips)  # (N*F, 3, H, W) uint8
        self.frames = frames[torch.randperm(len(frames), generator=torch.Generator().manual_seed(0))]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict:
        return {"image": from_uint8(self.frames[index])}


@torch.no_grad()
def encode(vae: VAE, clips, indices: list[int], labels: dict[str, str], name: str, batch_size: int,
           cache_dir: Path | None = CACHE_DIR) -> dict[str, torch.Tensor]:
    """Scaled latents `(N, F, c, h, w)` of `clips[i]["video"]` for i in `indices`, with `labels` (N,) (name
    -> item key), cached as `cache_dir/<name>-vae<fingerprint>.safetensors`; a corrupt cache file is encoded again."""
    path = cache_dir / f"{name}-vae{fingerprint(vae)}.safetensors" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            return load_file(path)
        except (SafetensorError, OSError):
            tqdm.write(f"{path} is corrupt: encoding the clips again")
    device = next(vae.parameters()).device
    latents, values = [], {label: [] for label in labels}
    for start in tqdm(range(0, len(indices), batch_size), desc=f"encode {name}"):
        items = [clips[i] for i in indices[start : start + batch_size]]
        video = torch.stack([item["video"] for item in items]).to(device)  # (B, F, C, H, W)
        latents.append(vae.encode_video(video).cpu())  # (B, F, c, h, w)
        for label, key in labels.items():
            values[label] += [item[key] for item in items]
    result = {"latents": torch.cat(latents), **{label: torch.tensor(v) for label, v in values.items()}}
    if path is not None:
        remove_leftovers(path.parent, older_than=86400)  # a day: another process may be writing its cache now
        atomic_write(path, lambda tmp: save_file(result, tmp))
    return result


def encode_clips(vae: VAE, split: str = "train", num_clips: int = 4000, num_frames: int = 8, seed: int = 0,
                 batch_size: int = 64, cache_dir: Path | None = CACHE_DIR) -> dict[str, torch.Tensor]:
    """Latents of clips 0..N-1 of MovingDigits(split, seed) with their `digits (N,)` and `directions (N,)`."""
    clips = MovingDigits(split, num_frames=num_frames, length=num_clips, seed=seed)
    return encode(vae, clips, list(range(num_clips)), {"digits": "digit", "directions": "direction"},
                  f"{split}-{num_clips}x{num_frames}-seed{seed}", batch_size, cache_dir)


def encode_folder(vae: VAE, folder: VideoFolder, clips_per_video: int = CLIPS_PER_VIDEO, seed: int = 0,
                  batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Latents of `clips_per_video` clips per video (random starts drawn from `seed`; the center clip when 1)
    with `labels (N,)` and `fps (N,)`, cached under a key of the videos and the clip settings."""
    settings = [[str(path) for path, _ in folder.samples], folder.num_frames, folder.frame_stride, folder.size,
                clips_per_video, seed]
    key = hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:12]
    folder.set_generator(torch.Generator().manual_seed(seed) if clips_per_video > 1 else None)
    try:
        indices = [i for i in range(len(folder)) for _ in range(clips_per_video)]
        return encode(vae, folder, indices, {"labels": "label", "fps": "fps"}, f"folder-{key}", batch_size, CACHE_DIR)
    finally:
        folder.set_generator(None)


def captions(digits: torch.Tensor, directions: torch.Tensor | None) -> list[str]:
    """Video captions ("the digit seven moves left"), or image captions when `directions` is None."""
    if directions is None:
        return [caption_for([d], None) for d in digits.tolist()]
    return [caption_for([d], [k]) for d, k in zip(digits.tolist(), directions.tolist(), strict=True)]


def latent_clips(vae: VAE, folder: VideoFolder | None, num_clips: int = 6000) -> dict:
    """The t2i/t2v training set: `latents (N, F, c, h, w)`, per clip its `captions` (video) and
    `image_captions` (t2i) and `fps (N,)`, plus `image_prompts` and `video_prompts` for previews.
    `num_clips` counts Moving-digit clips; a folder gives CLIPS_PER_VIDEO clips per video."""
    if not 1 <= num_clips <= MAX_CLIPS:
        raise ValueError(f"num_clips must be in [1, {MAX_CLIPS}], got {num_clips}")
    channels = 1 if folder is None else 3
    if vae.config.in_channels != channels:
        raise ValueError(f"the VAE takes {vae.config.in_channels}-channel frames but the training clips have "
                         f"{channels}: use a VAE (or --init pipeline) trained on this data")
    if folder is None:
        clips = encode_clips(vae, "train", num_clips)
        return {"latents": clips["latents"], "captions": captions(clips["digits"], clips["directions"]),
                "image_captions": captions(clips["digits"], None), "fps": torch.full((num_clips,), DEFAULT_FPS),
                "image_prompts": [caption_for([d], None) for d in range(10)],
                "video_prompts": [caption_for([d], [d % 8]) for d in range(4)]}
    clips = encode_folder(vae, folder, CLIPS_PER_VIDEO)
    names = [caption_from_class(name) for name in folder.classes]
    per_clip = [names[label] for label in clips["labels"].tolist()]
    return {"latents": clips["latents"], "captions": per_clip, "image_captions": per_clip, "fps": clips["fps"],
            "image_prompts": names, "video_prompts": names[:4]}
