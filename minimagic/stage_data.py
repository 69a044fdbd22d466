"""What the training stages learn from: Moving digits (the default) or real clips of a UCF-101-style folder.

The diffusion stages never see pixels: every clip is encoded once, z = [E(x^1), ..., E(x^F)] (docs/paper.md §1),
and kept with its caption and its FPS condition v = source fps / frame_stride (docs/paper.md §6.3). A folder's
captions come from its class names ("playing guitar"); Moving digits have "the digit seven moves left".
"""

import hashlib
import json

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from minimagic.data import caption_for
from minimagic.latents import CACHE_DIR, captions, encode_clips, fingerprint
from minimagic.pipeline import DEFAULT_FPS
from minimagic.vae import VAE
from minimagic.video import from_uint8, to_uint8
from minimagic.videofolder import DATA_PRESETS, VideoFolder, caption_from_class

MOVING_DIGITS = "moving-digits"
CLIPS_PER_VIDEO = 4  # random clips encoded per video of a folder (UCF-101 videos last 7 s on average)


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
def encode_folder(vae: VAE, folder: VideoFolder, clips_per_video: int = CLIPS_PER_VIDEO, seed: int = 0,
                  batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Scaled latents `(N, F, c, h, w)` of `clips_per_video` clips per video (random starts drawn from
    `seed`; the center clip when 1), with `labels (N,)` and `fps (N,)`. Cached in `data/cache/`, keyed by
    the videos, the clip settings and the VAE's weights."""
    settings = [[str(path) for path, _ in folder.samples], folder.num_frames, folder.frame_stride, folder.size,
                clips_per_video, seed]
    key = hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:12]
    path = CACHE_DIR / f"folder-{key}-vae{fingerprint(vae)}.safetensors"
    if path.is_file():
        return load_file(path)
    folder.set_generator(torch.Generator().manual_seed(seed) if clips_per_video > 1 else None)
    indices = [i for i in range(len(folder)) for _ in range(clips_per_video)]
    device = next(vae.parameters()).device
    latents, labels, fps = [], [], []
    for start in tqdm(range(0, len(indices), batch_size), desc="encode folder clips"):
        items = [folder[i] for i in indices[start : start + batch_size]]
        video = torch.stack([item["video"] for item in items]).to(device)  # (B, F, 3, H, W)
        latents.append(vae.encode_video(video).cpu())  # (B, F, c, h, w)
        labels += [item["label"] for item in items]
        fps += [item["fps"] for item in items]
    folder.set_generator(None)
    result = {"latents": torch.cat(latents), "labels": torch.tensor(labels), "fps": torch.tensor(fps)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(result, path)
    return result


def latent_clips(vae: VAE, folder: VideoFolder | None, num_clips: int = 6000) -> dict:
    """The t2i/t2v training set: `latents (N, F, c, h, w)`, per clip its `captions` (video) and
    `image_captions` (t2i) and `fps (N,)`, plus `image_prompts` and `video_prompts` for previews.
    `num_clips` counts Moving-digit clips; a folder gives CLIPS_PER_VIDEO clips per video."""
    channels = 1 if folder is None else 3
    if vae.config.in_channels != channels:
        raise ValueError(f"the VAE takes {vae.config.in_channels}-channel frames but the training clips have "
                         f"{channels}: use a VAE (or --init pipeline) trained on this data")
    if folder is None:
        clips = encode_clips(vae, "train", num_clips)
        fps = torch.full((len(clips["digits"]),), DEFAULT_FPS)
        return {"latents": clips["latents"], "captions": captions(clips["digits"], clips["directions"]),
                "image_captions": captions(clips["digits"], None), "fps": fps,
                "image_prompts": [caption_for([d], None) for d in range(10)],
                "video_prompts": [caption_for([d], [d % 8]) for d in range(4)]}
    clips = encode_folder(vae, folder, CLIPS_PER_VIDEO)
    names = [caption_from_class(name) for name in folder.classes]
    per_clip = [names[label] for label in clips["labels"].tolist()]
    return {"latents": clips["latents"], "captions": per_clip, "image_captions": per_clip, "fps": clips["fps"],
            "image_prompts": names, "video_prompts": names[:4]}
