"""Train the DigitClassifier that scores generated videos (minimagic.metrics) and ship its checkpoint.

Trains on single frames of `MovingDigits("train", image_mode=True)` (the 4,000 train digits placed
anywhere on the 64x64 canvas) with light augmentation: a small rotation/scale about the digit, a
random Gaussian blur, dimmer strokes, a faint grey background and pixel noise, because generated
frames are often a little blurry or noisy. One frame in 8 is replaced by noise or a blank canvas
labelled NO_DIGIT, so that garbage never scores as a digit. Reports the accuracy on frames of the
1,000 held-out test digits, never seen in training. About 5 minutes on one free CPU core:

    python scripts/train_digit_classifier.py --steps 4000
"""

import argparse
import math
import shlex
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from minimagic.data import MovingDigits
from minimagic.metrics import CLASSIFIER_DIR, NO_DIGIT, DigitClassifier, DigitClassifierConfig, centroid_path

WARMUP = 100  # optimizer steps of linear learning-rate warm-up


def rand(B: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(B, generator=generator)


def no_digit_frames(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Frames of class NO_DIGIT `(n, 1, size, size)`: uniform noise of random strength (none for a
    quarter of them) on a random grey level, black included."""
    grey = rand(n, -1.0, 0.0, generator) * (torch.rand(n, generator=generator) < 0.75)
    strength = rand(n, 0.0, 2.0, generator) * (torch.rand(n, generator=generator) < 0.75)
    noise = torch.rand(n, 1, size, size, generator=generator)
    return (grey[:, None, None, None] + strength[:, None, None, None] * noise).clamp(-1, 1)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Randomly warp, blur, dim and noise a batch of frames `(B, 1, H, W)` in [-1, 1]."""
    B, _, H, W = images.shape
    ink = (images + 1) / 2  # (B, 1, H, W) in [0, 1], background 0
    # rotation (+-15 deg) and scale (0.85-1.15) about the digit's centroid, in grid_sample coordinates
    centre = centroid_path(images[:, None])[:, 0] / torch.tensor([W - 1.0, H - 1.0]) * 2 - 1  # (B, 2)
    angle, scale = rand(B, -0.26, 0.26, generator), rand(B, 0.85, 1.15, generator)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], 1)  # (B, 2, 2)
    shift = centre - (rotation @ centre[..., None])[..., 0]  # (B, 2)
    grid = F.affine_grid(torch.cat([rotation, shift[..., None]], -1), list(ink.shape), align_corners=True)
    ink = F.grid_sample(ink, grid, align_corners=True)  # (B, 1, H, W)
    # Gaussian blur with sigma in [0, 1.5] for half of the frames (one 7x7 kernel per frame)
    sigma = rand(B, 0.0, 1.5, generator) * (torch.rand(B, generator=generator) < 0.5) + 1e-3
    taps = torch.exp(-(torch.arange(-3.0, 4.0) ** 2) / (2 * sigma[:, None] ** 2))  # (B, 7)
    taps = taps / taps.sum(-1, keepdim=True)
    kernels = (taps[:, :, None] * taps[:, None, :])[:, None]  # (B, 1, 7, 7)
    ink = F.conv2d(ink.reshape(1, B, H, W), kernels, padding=3, groups=B).reshape(B, 1, H, W)
    # dimmer strokes, a faint grey background, pixel noise
    ink = ink * rand(B, 0.6, 1.0, generator)[:, None, None, None] + rand(B, 0.0, 0.1, generator)[:, None, None, None]
    noise = torch.randn(ink.shape, generator=generator) * rand(B, 0.0, 0.1, generator)[:, None, None, None]
    return (ink + noise).clamp(0, 1) * 2 - 1  # (B, 1, H, W) in [-1, 1]


@torch.no_grad()
def accuracy(model: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    predicted = torch.cat([model(chunk).argmax(-1) for chunk in images.split(500)])
    return (predicted == labels).float().mean().item()


def fit(model: torch.nn.Module, batches, loss_of, lr: float, steps: int, log_every: int) -> float:
    """AdamW on `loss_of(batch)` for every batch, WARMUP steps of linear warm-up then a cosine decay over
    `steps`; returns the minutes it took. The video classifier's script trains with it too."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)

    def warmup_cosine(step: int) -> float:
        return min(1, (step + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * step / steps))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine)
    start = time.time()
    for step, batch in enumerate(batches, start=1):
        loss = loss_of(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == steps:
            print(f"step {step}/{steps}  loss {loss.item():.3f}  {time.time() - start:.0f}s", flush=True)
    return (time.time() - start) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--test-frames", type=int, default=2000)
    parser.add_argument("--out", default=str(CLASSIFIER_DIR))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # leave the other core to the training run next to it
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    train = MovingDigits("train", image_mode=True, length=args.steps * args.batch_size, seed=args.seed)
    test = MovingDigits("test", image_mode=True, length=args.test_frames, seed=args.seed)
    model = DigitClassifier(DigitClassifierConfig.preset("toy"))
    print(f"DigitClassifier: {sum(p.numel() for p in model.parameters()):,} parameters")

    def loss_of(batch: dict) -> torch.Tensor:
        images, labels = batch["image"], batch["digit"]  # (B, 1, H, W), (B,)
        num_empty = args.batch_size // 8  # one frame in 8 holds no digit
        images[:num_empty], labels[:num_empty] = no_digit_frames(num_empty, images.shape[-1], generator), NO_DIGIT
        return F.cross_entropy(model(augment(images, generator)), labels, label_smoothing=0.1)

    minutes = fit(model, DataLoader(train, batch_size=args.batch_size), loss_of, args.lr, args.steps, log_every=250)
    model.eval()
    test_batch = next(iter(DataLoader(test, batch_size=len(test))))
    test_accuracy = accuracy(model, test_batch["image"], test_batch["digit"])
    noise = no_digit_frames(1000, test_batch["image"].shape[-1], generator)
    noise_accuracy = accuracy(model, noise, torch.full((len(noise),), NO_DIGIT))
    print(
        f"held-out test accuracy {test_accuracy:.4f} on {len(test)} frames, noise frames read as "
        f"NO_DIGIT {noise_accuracy:.4f}; trained in {minutes:.1f} min"
    )
    model.save_pretrained(
        args.out,
        command=shlex.join(["python", *sys.argv]),
        test_accuracy=round(test_accuracy, 4),
        test_frames=len(test),
        noise_accuracy=round(noise_accuracy, 4),
        train_minutes=round(minutes, 2),
    )
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
