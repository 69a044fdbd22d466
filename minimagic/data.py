"""Captioned Moving MNIST: the toy text-to-video data set of minimagic.

MagicVideo trains on captioned web videos (WebVid-10M); a laptop cannot, so minimagic makes its own
captioned videos: real handwritten MNIST digits moving on a black canvas, described by a caption with
a fixed grammar, `"the digit seven moves up and to the left"`, so that evaluation can parse it back.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from minimagic.paths import DATA_DIR

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# direction name -> unit step (dx, dy) in image coordinates (y grows downwards)
DIRECTIONS = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "up and to the left": (-1, -1),
    "up and to the right": (1, -1),
    "down and to the left": (-1, 1),
    "down and to the right": (1, 1),
}
DIRECTION_NAMES = tuple(DIRECTIONS)
DIGIT_SIZE = 28
_CLAUSE = re.compile(r"the digit (\w+) moves (.+?)(?= and the digit |$)")


def load_digits(split: str = "train", mnist_root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Real MNIST digits `(N, 28, 28)` uint8 and labels `(N,)` of one fixed split ("train" or "test").

    By default the 5,000 digits shipped in `data/mnist_5k.npz` (4,000 train / 1,000 held-out test,
    built by `scripts/build_digits.py`). With `mnist_root`, torchvision's MNIST files found there
    (`root/MNIST/raw/*-ubyte`) give all 60,000 train / 10,000 test digits; nothing is downloaded.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if mnist_root is not None:
        from torchvision.datasets import MNIST

        try:
            mnist = MNIST(str(mnist_root), train=split == "train", download=False)
        except RuntimeError as error:
            raise FileNotFoundError(f"no MNIST files under {mnist_root}/MNIST/raw: {error}") from None
        return mnist.data, mnist.targets
    with np.load(DATA_DIR / "mnist_5k.npz") as archive:
        images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
    return torch.from_numpy(images), torch.from_numpy(labels).long()


def caption_for(digits: list[int], directions: list[int] | None) -> str:
    """`"the digit seven moves left"` (video) or `"the digit seven"` (image, `directions=None`)."""
    if directions is None:
        return " and ".join(f"the digit {NUMBER_WORDS[d]}" for d in digits)
    return " and ".join(
        f"the digit {NUMBER_WORDS[d]} moves {DIRECTION_NAMES[k]}" for d, k in zip(digits, directions, strict=True)
    )


def parse_caption(caption: str) -> list[tuple[int, int]]:
    """Inverse of `caption_for` for videos: a list of (digit, direction index), one per digit."""
    clauses = _CLAUSE.findall(caption.strip().lower())
    if not clauses:
        raise ValueError(f"caption {caption!r} does not follow 'the digit <word> moves <direction>'")
    parsed = []
    for word, direction in clauses:
        if word not in NUMBER_WORDS:
            raise ValueError(f"unknown number word {word!r} in {caption!r}; expected one of {NUMBER_WORDS}")
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {direction!r} in {caption!r}; expected one of {DIRECTION_NAMES}")
        parsed.append((NUMBER_WORDS.index(word), DIRECTION_NAMES.index(direction)))
    return parsed


@dataclass
class MovingDigitsConfig:
    size: int = 64  # canvas H = W
    num_frames: int = 8  # F
    num_digits: int = 1  # 1 or 2
    speed: float = 3.0  # pixels per frame
    length: int = 10_000  # items per epoch (the data set is procedural)
    seed: int = 0

    def __post_init__(self):
        if self.size < DIGIT_SIZE:
            raise ValueError(f"canvas size {self.size} is smaller than a {DIGIT_SIZE}x{DIGIT_SIZE} digit")
        if self.num_frames < 1 or self.length < 1 or self.speed < 0:
            raise ValueError(f"num_frames, length must be >= 1 and speed >= 0, got {self}")
        if self.num_digits not in (1, 2):
            raise ValueError(f"num_digits must be 1 or 2, got {self.num_digits}")


class MovingDigits(Dataset):
    """Captioned Moving MNIST: 28x28 digits moving at constant speed in one of 8 directions.

    Item `i` is a pure function of (seed, split, i). The start position is drawn so that the digit
    reaches no wall within the clip when the canvas allows it, so the caption's direction is the
    motion seen in every frame; longer clips bounce off the walls (the caption names the first leg).
    With `image_mode=True` items are single frames captioned `"the digit seven"` (image pretraining).
    """

    def __init__(self, split: str = "train", config: MovingDigitsConfig | None = None,
                 image_mode: bool = False, mnist_root: str | Path | None = None, **overrides):
        self.config = config or MovingDigitsConfig(**overrides)
        self.split, self.image_mode = split, image_mode
        self.images, self.labels = load_digits(split, mnist_root)

    def __len__(self) -> int:
        return self.config.length

    def _path(self, generator: torch.Generator, direction: int) -> torch.Tensor:
        """Top-left corner (x, y) of one digit in each frame, `(F, 2)`, bouncing off the walls."""
        cfg, room = self.config, self.config.size - DIGIT_SIZE
        step = torch.tensor(DIRECTIONS[DIRECTION_NAMES[direction]], dtype=torch.float64)
        velocity = cfg.speed * step / step.norm()
        travel = (velocity.abs() * (cfg.num_frames - 1)).clamp(max=room)
        low = torch.where(velocity < 0, travel, torch.zeros(2, dtype=torch.float64))
        uniform = torch.rand(2, generator=generator, dtype=torch.float64)
        # short clips: start where the whole path fits; clips that must bounce: start anywhere
        start = torch.where(travel < room, low + uniform * (room - travel), uniform * room)
        unfolded = start + velocity * torch.arange(cfg.num_frames, dtype=torch.float64)[:, None]  # (F, 2)
        folded = unfolded.remainder(2 * room) if room > 0 else unfolded * 0  # reflect at the walls
        return torch.where(folded > room, 2 * room - folded, folded).round().long()

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for MovingDigits of length {len(self)}")
        cfg = self.config
        split_offset = 0 if self.split == "train" else 1
        generator = torch.Generator().manual_seed((cfg.seed * 1_000_003 + index) * 2 + split_offset)
        frames = 1 if self.image_mode else cfg.num_frames
        canvas = torch.zeros(frames, cfg.size, cfg.size)  # (F, H, W) in [0, 1]
        picks = torch.randint(len(self.labels), (cfg.num_digits,), generator=generator)
        directions = torch.randint(len(DIRECTIONS), (cfg.num_digits,), generator=generator)
        starts = []
        for pick, direction in zip(picks, directions, strict=True):
            path = self._path(generator, int(direction))[:frames]  # (F, 2) as (x, y)
            digit = self.images[pick].float() / 255
            for f, (x, y) in enumerate(path.tolist()):
                window = canvas[f, y : y + DIGIT_SIZE, x : x + DIGIT_SIZE]
                torch.maximum(window, digit, out=window)
            starts.append(path[0])
        digits = self.labels[picks]
        video = (canvas * 2 - 1).unsqueeze(1)  # (F, 1, H, W) in [-1, 1]
        item = {"digits": digits, "directions": directions, "start": torch.stack(starts),
                "digit": int(digits[0]), "direction": int(directions[0])}
        if self.image_mode:
            return {"image": video[0], "caption": caption_for(digits.tolist(), None), **item}
        return {"video": video, "caption": caption_for(digits.tolist(), directions.tolist()), **item}


class MovingMNISTFile(Dataset):
    """The classic unconditional Moving MNIST file `mnist_test_seq.npy` `(20, N, 64, 64)` uint8.

    Items are videos `(20, 1, 64, 64)` in [-1, 1] with an empty caption (no labels are known).
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Moving MNIST file not found: {path}")
        self.array = np.load(path, mmap_mode="r")
        if self.array.ndim != 4 or self.array.dtype != np.uint8:
            raise ValueError(f"{path}: expected uint8 array (frames, N, H, W), got {self.array.dtype} "
                             f"{self.array.shape}")

    def __len__(self) -> int:
        return self.array.shape[1]

    def __getitem__(self, index: int) -> dict:
        frames = torch.from_numpy(np.ascontiguousarray(self.array[:, index]))  # (F, H, W) uint8
        return {"video": (frames.float() / 127.5 - 1).unsqueeze(1), "caption": ""}  # (F, 1, H, W)
