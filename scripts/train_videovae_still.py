"""A VideoVAE trained on still digits: can its temporal layers (docs/paper.md §5) learn to use the other frames?

The `videovae` stage (minimagic/stages/videovae.py) through the same `train` loop as `python -m minimagic train
videovae`, with the clamped loss and the shipped VideoVAE's continuation recipe (RECIPE), but on Moving-digit
clips whose digit does not move (speed 0), so that a position holds the same content in every frame and
per-frame latent noise can be averaged away over the earlier frames. Then `bench/videovae_context.py` measures
the result, whole clips against each frame decoded alone.

    PYTHONPATH=. python scripts/train_videovae_still.py --latent-noise 1.0 --steps 600 --run-dir runs/vv-still
    PYTHONPATH=. python bench/videovae_context.py runs/vv-still/checkpoint --noise 0 1
"""

import argparse
import shlex
import sys
from pathlib import Path

import torch

from minimagic.data import MovingDigits
from minimagic.paths import VIDEOVAE_CHECKPOINT
from minimagic.stages import VideoVAEStage
from minimagic.train import TrainConfig, train

BATCH = 100  # clips encoded at once
RECIPE = dict(batch_size=4, lr=1e-3, ema_decay=0.995, warmup=50)  # as the shipped VideoVAE's steps 3001-3500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", default=str(VIDEOVAE_CHECKPOINT), help="the VideoVAE (or VAE) to start from")
    parser.add_argument("--latent-noise", type=float, default=1.0)
    parser.add_argument("--num-clips", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--run-dir", type=Path, required=True)
    args = parser.parse_args()
    stage = VideoVAEStage(init=args.init, clamped_loss=True, latent_noise=args.latent_noise, num_clips=args.num_clips)
    stage.videos = MovingDigits("train", length=args.num_clips, speed=0.0)  # the digit held still
    with torch.no_grad():
        video = torch.stack([stage.videos[i]["video"] for i in range(args.num_clips)])  # (N, F, 1, H, W)
        stage.latents = torch.cat([stage.model.encode_video(clips) for clips in video.split(BATCH)])  # (N, F, c, h, w)
    cfg = TrainConfig(steps=args.steps, **RECIPE)
    command = "python scripts/train_videovae_still.py " + shlex.join(sys.argv[1:])
    model = train(stage, cfg, args.run_dir, overwrite=True)
    stage.save(model, args.run_dir / "checkpoint", command=command, step=args.steps)
    print(f"saved {args.run_dir / 'checkpoint'}")


if __name__ == "__main__":
    main()
