"""Continuation training (minimagic/stages/continuation.py) from the shipped t2v model, directed or bidirectional.

    python scripts/train_continuation.py --attention directed --steps 1500 --seed 0 \
        --run-dir runs/continuation-directed-s0

It runs `minimagic.train.train` exactly as `python -m minimagic train` does for the other stages and saves a
t2v pipeline folder (RUN_DIR/checkpoint unless --out) whose config.json records this command.
"""

import argparse
import shlex
import sys
from pathlib import Path

import torch

from minimagic.paths import T2V_CHECKPOINT
from minimagic.stages import ContinuationStage
from minimagic.train import TrainConfig, train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attention", choices=["directed", "bidirectional"], default="directed")
    parser.add_argument("--init", default=str(T2V_CHECKPOINT), help="the t2v pipeline to start from")
    parser.add_argument("--num-clips", type=int, default=300, help="training clips encoded once (cached)")
    parser.add_argument("--clip-frames", type=int, default=32, help="long bouncing clips the windows are cut from")
    parser.add_argument("--context-noise", type=int, default=0, help="given frames noised to t_c ~ U{0..this}")
    parser.add_argument("--sink-frames", type=int, default=0, help="later windows begin with the clip's first frames")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--checkpoint-every", type=int, default=0,
                        help="also save RUN_DIR/checkpoint-STEP every N steps (0: only at the end)")
    parser.add_argument("--resume", action="store_true", help="continue RUN_DIR from its last saved state")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--out", help="default RUN_DIR/checkpoint")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    stage = ContinuationStage(init=args.init, num_clips=args.num_clips, temporal_attention=args.attention,
                              clip_frames=args.clip_frames, context_noise=args.context_noise,
                              sink_frames=args.sink_frames)
    given = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr}
    overrides = {name: value for name, value in given.items() if value is not None}
    cfg = TrainConfig(**{**stage.defaults, **overrides, "seed": args.seed, "device": args.device,
                          "checkpoint_every": args.checkpoint_every})
    out = Path(args.out or Path(args.run_dir) / "checkpoint")
    command = "python scripts/train_continuation.py " + shlex.join(sys.argv[1:] if argv is None else argv)

    def save(model, step: int) -> None:
        stage.save(model, Path(args.run_dir) / f"checkpoint-{step}", command=command, step=step)

    model = train(stage, cfg, args.run_dir, save=save if args.checkpoint_every else None,
                  resume=args.resume)
    stage.save(model, out, command=command, step=cfg.steps)
    print(f"saved the {args.attention} continuation model to {out}")


if __name__ == "__main__":
    main()
