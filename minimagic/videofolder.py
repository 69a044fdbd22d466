"""Real-video training data for MagicVideo: UCF-101-style clips with a caption and the clip's FPS condition v.

MagicVideo trains on short clips sampled from longer videos and conditions on the frame rate of the
sample, v = source fps / frame_stride (docs/paper.md §6.3). A UCF-101 folder `root/<ClassName>/*.avi` has no
captions, so the class name becomes one: `ApplyEyeMakeup` -> "apply eye makeup".

Data presets (`VideoFolder.preset(name, root)`, `--data NAME --data-root ROOT` on the command line) pick a
UCF-101 subset; ROOT is the unpacked UCF-101 folder (`ROOT/Biking/v_Biking_g01_c01.avi`, ...):
- `ucf10`: 10 classes with distinct motions, UCF10_CLASSES = Biking, Billiards, Diving, GolfSwing,
  HorseRiding, JumpingJack, PlayingGuitar, PushUps, Rowing, SkyDiving; 8 frames 4 apart at 64x64 (UCF-101
  is 25 fps, so a clip spans 1.2 s and v = 6.25), for the toy presets on a laptop or one small GPU.
- `ucf10-256`: the same classes as 16 frames 2 apart at 256x256 (v = 12.5), the paper's 16 keyframes at
  256x256 (docs/paper.md §1.2), for `--preset base` with Stable Diffusion's VAE (pretrained.py).
A preset takes an official split file, e.g. `split_file=".../ucfTrainTestlist/trainlist01.txt"`.
"""

import re
from pathlib import Path

import torch
from torch.nn.functional import interpolate
from torch.utils.data import Dataset

from minimagic.video import from_uint8, read_video, video_info

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm")
UCF10_CLASSES = ("Biking", "Billiards", "Diving", "GolfSwing", "HorseRiding", "JumpingJack", "PlayingGuitar",
                 "PushUps", "Rowing", "SkyDiving")
DATA_PRESETS = {
    "ucf10": dict(class_names=UCF10_CLASSES, num_frames=8, frame_stride=4, size=64),
    "ucf10-256": dict(class_names=UCF10_CLASSES, num_frames=16, frame_stride=2, size=256),
}


def caption_from_class(name: str) -> str:
    """CamelCase class name -> lowercase words: `ApplyEyeMakeup` -> "apply eye makeup", `YoYo` -> "yo yo"."""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)  # acronyms, Capitalised words, numbers
    return " ".join(words).lower()


def _read_split(split_file: Path, root: Path) -> set[Path]:
    """Official UCF-101 split lines: `Class/v_x.avi 1` (trainlist) or `Class/v_x.avi` (testlist)."""
    if not split_file.is_file():
        raise FileNotFoundError(f"split file not found: {split_file}")
    lines = split_file.read_text().splitlines()
    return {root / line.split()[0] for line in lines if line.strip()}


class VideoFolder(Dataset):
    """A torch Dataset over `root/<ClassName>/*.avi|*.mp4`, decoded with PyAV.

    Each item is a dict: `video` (F, 3, size, size) float in [-1, 1], `caption` (from the class name),
    `label` (index in `classes`), `path`, and `fps` = source fps / frame_stride. Clips are `num_frames`
    frames `frame_stride` apart: the center clip by default, a random start when a `generator` is set
    (with DataLoader workers, each worker gets a copy of it). Frames are resized so the short side is
    `size`, then center cropped. `split_file` (e.g. trainlist01.txt) restricts the videos;
    `class_names` fixes the classes and their label order (default: sorted folders that hold videos).
    """

    def __init__(
        self,
        root: str | Path,
        num_frames: int = 8,
        frame_stride: int = 1,
        size: int = 64,
        split_file: str | Path | None = None,
        class_names: list[str] | None = None,
        generator: torch.Generator | None = None,
    ):
        for name, value in (("num_frames", num_frames), ("frame_stride", frame_stride), ("size", size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"video folder not found: {self.root}")
        self.num_frames, self.frame_stride, self.size = num_frames, frame_stride, size
        self.generator = generator
        self.classes = list(class_names) if class_names is not None else self._find_classes()
        self.samples = self._find_samples(
            None if split_file is None else _read_split(Path(split_file), self.root)
        )

    @classmethod
    def preset(cls, name: str, root: str | Path, **overrides) -> "VideoFolder":
        """A named UCF-101 subset of DATA_PRESETS (see the module docstring) read from `root`."""
        if name not in DATA_PRESETS:
            raise ValueError(f"unknown data preset {name!r}; choose from {sorted(DATA_PRESETS)}")
        options = {**DATA_PRESETS[name], **overrides}
        return cls(root, **{**options, "class_names": list(options["class_names"])})

    def _videos(self, folder: Path) -> list[Path]:
        return sorted(path for path in folder.iterdir() if path.suffix.lower() in VIDEO_EXTENSIONS)

    def _find_classes(self) -> list[str]:
        classes = sorted(d.name for d in self.root.iterdir() if d.is_dir() and self._videos(d))
        if not classes:
            raise ValueError(f"no videos ({'/'.join(VIDEO_EXTENSIONS)}) in class folders of {self.root}")
        return classes

    def _find_samples(self, split: set[Path] | None) -> list[tuple[Path, int]]:
        samples = []
        for label, name in enumerate(self.classes):
            if not (self.root / name).is_dir():
                raise ValueError(f"class folder {self.root / name} not found (class_names has {name!r})")
            samples += [
                (path, label) for path in self._videos(self.root / name) if split is None or path in split
            ]
        if split is not None:
            wanted = {path for path in split if path.parent.name in self.classes}
            missing = wanted - {path for path, _ in samples}
            if missing:
                raise ValueError(f"{len(missing)} videos of the split file are missing, e.g. {min(missing)}")
        if not samples:
            raise ValueError(f"no videos found in {self.root} for classes {self.classes} and the given split")
        return samples

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Random clip starts drawn from `generator`; None goes back to the deterministic center clip."""
        self.generator = generator

    def __len__(self) -> int:
        return len(self.samples)

    def _clip_start(self, path: Path) -> tuple[int, float]:
        total, fps = video_info(path)
        span = (self.num_frames - 1) * self.frame_stride + 1  # source frames covered by one clip
        if total < span:
            raise ValueError(
                f"video {path} has {total} frames, shorter than num_frames={self.num_frames} x "
                f"frame_stride={self.frame_stride} needs ({span} frames)"
            )
        if self.generator is None:
            return (total - span) // 2, fps
        return int(torch.randint(total - span + 1, (1,), generator=self.generator)), fps

    def _resize_crop(self, frames: torch.Tensor) -> torch.Tensor:
        """(F, 3, H, W) uint8 -> (F, 3, size, size) float in [-1, 1]: short side to `size`, center crop."""
        H, W = frames.shape[-2:]
        scale = self.size / min(H, W)
        height, width = max(self.size, round(H * scale)), max(self.size, round(W * scale))
        video = interpolate(from_uint8(frames), size=(height, width), mode="bilinear", antialias=True)
        top, left = (height - self.size) // 2, (width - self.size) // 2
        return video[..., top : top + self.size, left : left + self.size].clamp(-1, 1)  # (F, 3, size, size)

    def __getitem__(self, index: int) -> dict:
        path, label = self.samples[index]
        start, fps = self._clip_start(path)
        frames, _ = read_video(path, start, self.num_frames, self.frame_stride)  # (F, 3, H, W) uint8
        return {
            "video": self._resize_crop(frames),
            "caption": caption_from_class(self.classes[label]),
            "label": label,
            "path": str(path),
            "fps": fps / self.frame_stride,
        }
