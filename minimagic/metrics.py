"""Evaluation of MagicVideo's text-to-video samples on captioned Moving MNIST: is it the right digit,
moving the right way, and the same digit in every frame?

MagicVideo reports FID/FVD/CLIPSIM on web video (docs/paper.md §8); the toy data has a caption with a fixed
grammar, so minimagic can score a sample exactly: a small `DigitClassifier` reads the digit of each
frame, and the intensity-weighted centroid of the frames gives the motion to compare with the caption.
"""

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minimagic import checkpoint
from minimagic.data import DIRECTION_NAMES, DIRECTIONS, parse_caption
from minimagic.paths import CLASSIFIER_CHECKPOINT

CLASSIFIER_DIR = CLASSIFIER_CHECKPOINT
UNIT_STEPS = torch.tensor([DIRECTIONS[name] for name in DIRECTION_NAMES], dtype=torch.float32)  # (8, 2)
NO_DIGIT = 10  # the 11th class: noise or an empty canvas, so that garbage never counts as a digit
PRESETS = {
    "tiny": dict(channels=(8, 16), depths=(1, 1), norm_groups=4),
    "toy": dict(channels=(16, 32, 64, 128), depths=(2, 2, 2, 1), norm_groups=8),
}


@dataclass
class DigitClassifierConfig:
    channels: tuple[int, ...] = (16, 32, 64, 128)  # one level per entry, each halves H and W: 64 -> 4
    depths: tuple[int, ...] = (2, 2, 2, 1)  # 3x3 convs per level, the first one with stride 2
    norm_groups: int = 8
    presets = PRESETS  # a class attribute, not a field

    def __post_init__(self):
        self.channels, self.depths = tuple(self.channels), tuple(self.depths)
        if not self.channels or any(c % self.norm_groups for c in self.channels):
            raise ValueError(f"channels {self.channels} must be non-empty and divide by norm_groups={self.norm_groups}")
        if len(self.depths) != len(self.channels) or min(self.depths) < 1:
            raise ValueError(f"depths {self.depths} must give >= 1 conv for each of the {len(self.channels)} levels")

    @classmethod
    def preset(cls, name: str, **overrides):
        if name not in cls.presets:
            model = cls.__name__.removesuffix("Config")
            raise ValueError(f"unknown {model} preset {name!r}; choose from {sorted(cls.presets)}")
        return cls(**{**cls.presets[name], **overrides})


class DigitClassifier(nn.Module):
    """A small CNN: 64x64 frame in [-1, 1] with a digit anywhere on it -> logits over 10 digits + NO_DIGIT."""

    def __init__(self, config: DigitClassifierConfig | None = None):
        super().__init__()
        self.config = config = config or DigitClassifierConfig()
        layers, in_channels = [], 1
        for channels, depth in zip(config.channels, config.depths, strict=True):
            for layer in range(depth):
                stride = 2 if layer == 0 else 1
                layers += [
                    nn.Conv2d(in_channels, channels, 3, stride, padding=1),
                    nn.GroupNorm(config.norm_groups, channels),
                    nn.SiLU(),
                ]
                in_channels = channels
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(in_channels, NO_DIGIT + 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features `(N, channels[-1])`: the globally average-pooled last feature map."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"DigitClassifier expects frames (N, 1, H, W), got {tuple(x.shape)}")
        return self.body(x).mean(dim=(2, 3))  # (N, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (N, 11): digits 0-9, then NO_DIGIT

    def save_pretrained(self, directory: str | Path, **info) -> None:
        checkpoint.save_checkpoint(directory, self.state_dict(), "digit-classifier", asdict(self.config), **info)

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None) -> "DigitClassifier":
        """The shipped classifier (`data/checkpoints/digit-classifier/`) or the one saved in `directory`."""
        directory = CLASSIFIER_DIR if directory is None else directory
        model = cls(DigitClassifierConfig(**checkpoint.load_meta(directory, "digit-classifier")["config"]))
        return checkpoint.load_weights(model, directory).eval()


def _check_video(video: torch.Tensor, name: str = "video") -> None:
    if video.ndim < 4 or video.shape[-3] != 1:
        raise ValueError(f"{name} must be (..., F, 1, H, W) with one channel, got {tuple(video.shape)}")


def centroid_path(video: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted centroid (x, y) in pixels of each frame: `(..., F, 1, H, W)` -> `(..., F, 2)`.

    Intensities are mapped from [-1, 1] to [0, 1] (black background weighs 0); a black frame gives
    the canvas centre.
    """
    _check_video(video)
    H, W = video.shape[-2:]
    mass = ((video[..., 0, :, :].float() + 1) / 2).clamp(0, 1)  # (..., F, H, W)
    total = mass.sum(dim=(-2, -1))  # (..., F)
    x = (mass.sum(dim=-2) * torch.arange(W, device=video.device)).sum(-1)  # (..., F)
    y = (mass.sum(dim=-1) * torch.arange(H, device=video.device)).sum(-1)  # (..., F)
    centre = torch.tensor([(W - 1) / 2, (H - 1) / 2], device=video.device)
    path = torch.stack([x, y], dim=-1) / total.clamp(min=1e-8)[..., None]  # (..., F, 2)
    return torch.where(total[..., None] > 0, path, centre)


def motion_direction(video: torch.Tensor) -> torch.Tensor:
    """Index into `DIRECTION_NAMES` of the direction closest (cosine) to the centroid's first-to-last
    displacement: `(..., F, 1, H, W)` -> `(...,)` long. A clip that does not move scores as "left"."""
    _check_video(video)
    if video.shape[-4] < 2:
        raise ValueError(f"motion needs at least 2 frames, got F={video.shape[-4]}")
    path = centroid_path(video)  # (..., F, 2)
    displacement = path[..., -1, :] - path[..., 0, :]  # (..., 2)
    units = F.normalize(UNIT_STEPS.to(video.device), dim=-1)  # (8, 2)
    return (F.normalize(displacement, dim=-1) @ units.T).argmax(dim=-1)  # (...,)


def psnr(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    """PSNR = 10 log10(2^2 / MSE) in dB for tensors in [-1, 1] (data range 2): per item of the first
    axis `(B,)`, and their mean (inf where x == y)."""
    if x.shape != y.shape or x.ndim < 1:
        raise ValueError(
            f"psnr needs two tensors of the same shape (B, ...), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    mse = (x.float() - y.float()).pow(2).reshape(len(x), -1).mean(dim=1)  # (B,)
    per_item = 10 * torch.log10(4 / mse)  # (B,)
    return per_item, per_item.mean().item()


@torch.no_grad()
def video_scores(videos: torch.Tensor, captions: list[str], classifier: DigitClassifier, batch_size: int = 256) -> dict:
    """Score generated clips `(B, F, 1, H, W)` against their single-digit captions.

    Returns `digit_accuracy` (frames classified as the captioned digit), `direction_accuracy` (clips
    whose `motion_direction` is the captioned one), `identity_consistency` (clips whose frames all
    get the same digit, not NO_DIGIT), and per clip: `predicted_digits` (B, F) with NO_DIGIT = 10,
    `predicted_direction` (B,), `clip_digit_accuracy` (B,).
    """
    if videos.ndim != 5 or videos.shape[2] != 1:
        raise ValueError(f"videos must be (B, F, 1, H, W), got {tuple(videos.shape)}")
    B, num_frames = videos.shape[:2]
    if len(captions) != B:
        raise ValueError(f"got {len(captions)} captions for {B} videos")
    parsed = [parse_caption(caption) for caption in captions]
    if any(len(p) != 1 for p in parsed):
        raise ValueError("video_scores needs single-digit captions ('the digit <word> moves <direction>')")
    digits = torch.tensor([p[0][0] for p in parsed])  # (B,)
    directions = torch.tensor([p[0][1] for p in parsed])  # (B,)
    device = next(classifier.parameters()).device
    frames = videos.reshape(B * num_frames, *videos.shape[2:])  # (B*F, 1, H, W)
    predicted = torch.cat([classifier(chunk.to(device)).argmax(-1).cpu() for chunk in frames.split(batch_size)])
    predicted = predicted.reshape(B, num_frames)  # (B, F)
    clip_digit_accuracy = (predicted == digits[:, None]).float().mean(dim=1)  # (B,)
    predicted_direction = motion_direction(videos).cpu()  # (B,)
    same_digit = (predicted == predicted[:, :1]).all(dim=1) & (predicted[:, 0] != NO_DIGIT)  # (B,)
    return {
        "digit_accuracy": clip_digit_accuracy.mean().item(),
        "direction_accuracy": (predicted_direction == directions).float().mean().item(),
        "identity_consistency": same_digit.float().mean().item(),
        "predicted_digits": predicted,
        "predicted_direction": predicted_direction,
        "clip_digit_accuracy": clip_digit_accuracy,
    }


def flicker(video: torch.Tensor, reference: torch.Tensor) -> float:
    """Temporal error of a decoded clip against the truth (VideoVAE, docs/paper.md §5): the mean over pixels of
    |(x_hat_{i+1} - x_hat_i) - (x_{i+1} - x_i)| for videos (B, F, C, H, W) in [-1, 1]. Per-frame errors
    that stay put between frames cost nothing; errors that change from frame to frame (dithering) do."""
    if video.shape != reference.shape or video.ndim != 5 or video.shape[1] < 2:
        raise ValueError(f"flicker needs two (B, F >= 2, C, H, W) videos, got {tuple(video.shape)} and "
                         f"{tuple(reference.shape)}")
    return ((video[:, 1:] - video[:, :-1]) - (reference[:, 1:] - reference[:, :-1])).abs().mean().item()


def background_flicker(video: torch.Tensor, threshold: float = -0.5, margin: int = 0) -> float:
    """Flicker without ground truth, for generated clips: the mean |x_{i+1} - x_i| over the pixels that are
    background (below `threshold`) in both frames. A still black background should not change at all.
    Most of it lies on the moving digit's anti-aliased edge; `margin` m > 0 counts only pixels more than m px
    from ink in either frame: dithering of the far background, which a still scene does not excuse."""
    if video.ndim != 5 or video.shape[1] < 2 or margin < 0:
        raise ValueError(f"background_flicker needs a (B, F >= 2, C, H, W) video and margin >= 0, got "
                         f"{tuple(video.shape)} and {margin}")
    background = (video[:, 1:] < threshold) & (video[:, :-1] < threshold)  # (B, F-1, C, H, W)
    if margin:  # drop pixels near ink in either frame: max-pool of ~background over a (2m+1)^2 window
        near = F.max_pool2d((~background).flatten(0, 2).float(), 2 * margin + 1, 1, margin)  # (B*(F-1)*C, H, W)
        background &= near.view_as(background) == 0
    change = (video[:, 1:] - video[:, :-1]).abs()
    return (change[background].mean() if background.any() else change.new_zeros(())).item()
