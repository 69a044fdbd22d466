"""FVD-MD: a video feature network for captioned Moving MNIST, in the role I3D plays for FVD (docs/paper.md §8).

MagicVideo reports FVD with I3D features trained on Kinetics. On Moving MNIST minimagic trains its own
small video network instead (`scripts/train_video_classifier.py`): a factorised 2D + temporal conv net that
reads a clip `(B, F, 1, H, W)` and predicts its digit and its direction. Its penultimate features (global
average pool over F, H, W) give the FVD-style score `fvd.fvd_md`, and its two heads give the prompt accuracy
of a generated clip (is it the captioned digit? does it move the captioned way?).
"""

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from minimagic import checkpoint
from minimagic.data import DIRECTION_NAMES, parse_caption
from minimagic.metrics import DigitClassifierConfig
from minimagic.paths import VIDEO_CLASSIFIER_CHECKPOINT

VIDEO_CLASSIFIER_DIR = VIDEO_CLASSIFIER_CHECKPOINT
STAGE = "video-classifier"
PRESETS = {
    "tiny": dict(channels=(8, 16), depths=(1, 1), norm_groups=4),
    "toy": dict(channels=(8, 32, 64, 128), depths=(1, 1, 2, 2), norm_groups=8),
}


@dataclass
class VideoClassifierConfig(DigitClassifierConfig):
    """The digit classifier's levels, each followed by a conv along the frames."""

    channels: tuple[int, ...] = (8, 32, 64, 128)  # one level per entry, each halves H and W: 64 -> 4
    depths: tuple[int, ...] = (1, 1, 2, 2)  # 3x3 convs per frame in each level, the first with stride 2
    norm_groups: int = 8
    temporal_kernel: int = 3  # frames seen by each temporal conv (motion needs >= 2)
    presets = PRESETS

    def __post_init__(self):
        super().__post_init__()
        if self.temporal_kernel < 1 or self.temporal_kernel % 2 == 0:
            raise ValueError(f"temporal_kernel must be odd and >= 1, got {self.temporal_kernel}")


class Level(nn.Module):
    """One level: 3x3 convs on each frame (the first strided), then a conv along F at every pixel ((2+1)D)."""

    def __init__(self, in_channels: int, channels: int, depth: int, temporal_kernel: int, norm_groups: int):
        super().__init__()
        layers = []
        for layer in range(depth):
            layers += [nn.Conv2d(in_channels if layer == 0 else channels, channels, 3, 2 if layer == 0 else 1,
                                 padding=1), nn.GroupNorm(norm_groups, channels), nn.SiLU()]
        self.spatial = nn.Sequential(*layers)
        self.temporal = nn.Sequential(nn.Conv1d(channels, channels, temporal_kernel, padding=temporal_kernel // 2),
                                      nn.GroupNorm(norm_groups, channels), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, F = x.shape[:2]
        h = self.spatial(x.flatten(0, 1))  # (B*F, C, H/2, W/2)
        H, W = h.shape[-2:]
        h = rearrange(h, "(b f) c h w -> (b h w) c f", b=B, f=F)
        h = h + self.temporal(h)  # residual: the per-frame features pass through, the temporal conv adds motion
        return rearrange(h, "(b h w) c f -> b f c h w", b=B, h=H, w=W)


class VideoClassifier(nn.Module):
    """Clip `(B, F, 1, H, W)` in [-1, 1] -> digit logits `(B, 10)` and direction logits `(B, 8)`."""

    def __init__(self, config: VideoClassifierConfig | None = None):
        super().__init__()
        self.config = config = config or VideoClassifierConfig()
        in_channels, levels = 1, []
        for channels, depth in zip(config.channels, config.depths, strict=True):
            levels.append(Level(in_channels, channels, depth, config.temporal_kernel, config.norm_groups))
            in_channels = channels
        self.levels = nn.Sequential(*levels)
        self.digit_head = nn.Linear(in_channels, 10)
        self.direction_head = nn.Linear(in_channels, len(DIRECTION_NAMES))

    @property
    def feature_dim(self) -> int:
        return self.config.channels[-1]

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """Penultimate features `(B, D)`: the last feature map averaged over F, H and W."""
        if video.ndim != 5 or video.shape[2] != 1:
            raise ValueError(f"VideoClassifier expects clips (B, F, 1, H, W), got {tuple(video.shape)}")
        return self.levels(video.float()).mean(dim=(1, 3, 4))  # (B, D)

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(video)  # (B, D)
        return self.digit_head(h), self.direction_head(h)  # (B, 10), (B, 8)

    def save_pretrained(self, directory: str | Path, **info) -> None:
        checkpoint.save_checkpoint(directory, self.state_dict(), STAGE, asdict(self.config), **info)

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None) -> "VideoClassifier":
        """The shipped network (`data/checkpoints/video-classifier/`) or the one saved in `directory`."""
        directory = VIDEO_CLASSIFIER_DIR if directory is None else directory
        model = cls(VideoClassifierConfig(**checkpoint.load_meta(directory, STAGE)["config"]))
        return checkpoint.load_weights(model, directory).eval()


@torch.no_grad()
def video_features(videos: torch.Tensor, network: VideoClassifier, batch_size: int = 64) -> torch.Tensor:
    """Clips `(N, F, 1, H, W)` -> features `(N, D)`, computed in chunks on the network's device."""
    device = next(network.parameters()).device
    return torch.cat([network.features(chunk.to(device)).cpu() for chunk in videos.split(batch_size)])


@torch.no_grad()
def predict(videos: torch.Tensor, network: VideoClassifier, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted digit `(N,)` and direction index `(N,)` of each clip."""
    device = next(network.parameters()).device
    outputs = [network(chunk.to(device)) for chunk in videos.split(batch_size)]
    return (torch.cat([d.argmax(-1).cpu() for d, _ in outputs]), torch.cat([k.argmax(-1).cpu() for _, k in outputs]))


def prompt_accuracy(videos: torch.Tensor, captions: list[str], network: VideoClassifier) -> dict[str, float]:
    """Fractions of clips `(N, F, 1, H, W)` whose network-predicted digit / direction is the captioned one."""
    if len(captions) != len(videos):
        raise ValueError(f"got {len(captions)} captions for {len(videos)} videos")
    parsed = [parse_caption(caption)[0] for caption in captions]
    digits, directions = torch.tensor([p[0] for p in parsed]), torch.tensor([p[1] for p in parsed])
    predicted_digits, predicted_directions = predict(videos, network)
    return {"digit_accuracy": (predicted_digits == digits).float().mean().item(),
            "direction_accuracy": (predicted_directions == directions).float().mean().item()}
