"""Train the VideoClassifier behind FVD-MD (minimagic.video_classifier) and ship its checkpoint.

Trains on clips of `MovingDigits("train")` (the 4,000 train digits, 8 directions) to predict the digit and
the direction, with light per-clip augmentation because generated clips are often a little blurry, dim or
noisy: a random Gaussian blur, dimmer strokes, a faint grey background and pixel noise drawn anew in every
frame. Reports both accuracies on clips of the 1,000 held-out test digits, never seen in training. A few
minutes on one free CPU core:

    python scripts/train_video_classifier.py --steps 2000
"""

import argparse
import shlex
import sys

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from train_digit_classifier import fit  # the sibling script: run this one as `python scripts/...`

from minimagic.data import MovingDigits
from minimagic.video_classifier import VIDEO_CLASSIFIER_DIR, VideoClassifier, VideoClassifierConfig, predict


def rand(B: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return (low + (high - low) * torch.rand(B, generator=generator))[:, None, None, None, None]  # (B, 1, 1, 1, 1)


def augment(videos: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Randomly blur, dim and noise a batch of clips `(B, F, 1, H, W)` in [-1, 1] (one draw per clip)."""
    B, num_frames, _, H, W = videos.shape
    ink = (videos + 1) / 2  # (B, F, 1, H, W) in [0, 1], background 0
    # Gaussian blur with sigma in [0, 1.5] for half of the clips (one 7x7 kernel per clip, all its frames)
    sigma = rand(B, 0.0, 1.5, generator).flatten() * (torch.rand(B, generator=generator) < 0.5) + 1e-3
    taps = torch.exp(-(torch.arange(-3.0, 4.0) ** 2) / (2 * sigma[:, None] ** 2))  # (B, 7)
    taps = taps / taps.sum(-1, keepdim=True)
    kernels = (taps[:, :, None] * taps[:, None, :])[:, None]  # (B, 1, 7, 7)
    frames = ink.transpose(0, 1).reshape(num_frames, B, H, W)  # (F, B, H, W): clip b's frames in channel b
    ink = F.conv2d(frames, kernels, padding=3, groups=B).reshape(num_frames, B, 1, H, W).transpose(0, 1)
    # dimmer strokes, a faint grey background, pixel noise (new in every frame)
    ink = ink * rand(B, 0.6, 1.0, generator) + rand(B, 0.0, 0.1, generator)
    noise = torch.randn(ink.shape, generator=generator) * rand(B, 0.0, 0.1, generator)
    return (ink + noise).clamp(0, 1) * 2 - 1  # (B, F, 1, H, W) in [-1, 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--test-clips", type=int, default=2000)
    parser.add_argument("--preset", default="toy")
    parser.add_argument("--out", default=str(VIDEO_CLASSIFIER_DIR))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # leave the other core to the training run next to it
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    train = MovingDigits("train", length=args.steps * args.batch_size, seed=args.seed)
    test = MovingDigits("test", length=args.test_clips, seed=args.seed)
    model = VideoClassifier(VideoClassifierConfig.preset(args.preset))
    print(f"VideoClassifier: {sum(p.numel() for p in model.parameters()):,} parameters")

    def loss_of(batch: dict) -> torch.Tensor:
        digit_logits, direction_logits = model(augment(batch["video"], generator))  # (B, 10), (B, 8)
        return (F.cross_entropy(digit_logits, batch["digit"], label_smoothing=0.1)
                + F.cross_entropy(direction_logits, batch["direction"], label_smoothing=0.1))

    minutes = fit(model, DataLoader(train, batch_size=args.batch_size), loss_of, args.lr, args.steps, log_every=100)
    model.eval()
    clips = next(iter(DataLoader(test, batch_size=len(test))))
    digits, directions = predict(clips["video"], model)
    digit_accuracy = (digits == clips["digit"]).float().mean().item()
    direction_accuracy = (directions == clips["direction"]).float().mean().item()
    print(f"held-out test accuracy: digit {digit_accuracy:.4f}, direction {direction_accuracy:.4f} on {len(test)} "
          f"clips; trained in {minutes:.1f} min")
    model.save_pretrained(
        args.out,
        command=shlex.join(["python", *sys.argv]),
        test_digit_accuracy=round(digit_accuracy, 4),
        test_direction_accuracy=round(direction_accuracy, 4),
        test_clips=len(test),
        train_minutes=round(minutes, 2),
    )
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
