"""Command line: `python -m minimagic train STAGE ...` and `python -m minimagic generate ...`."""

import argparse
import shlex
import sys
from pathlib import Path

from minimagic.train import TrainConfig


def train_command(args: argparse.Namespace) -> None:
    from minimagic.stages import STAGES
    from minimagic.train import train

    stage_options = {"preset": args.preset, **({"init": args.init} if args.init else {})}
    stage = STAGES[args.stage](**stage_options)
    overrides = {key: getattr(args, key) for key in ("steps", "batch_size", "lr", "ema_decay", "seed", "device",
                                                      "precision", "preview_every") if getattr(args, key) is not None}
    cfg = TrainConfig(**{**getattr(stage, "defaults", {}), **overrides})
    run_dir = Path(args.run_dir or f"runs/{args.stage}")
    model = train(stage, cfg, run_dir)
    command = "python -m minimagic " + shlex.join(sys.argv[1:])
    out = Path(args.out or run_dir / "checkpoint")
    stage.save(model, out, command=command)
    print(f"saved {args.stage} checkpoint to {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minimagic", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    tr = commands.add_parser("train", help="train one stage (vae, t2i, t2v, ...)")
    tr.add_argument("stage", choices=["vae", "t2i", "t2v"])
    tr.add_argument("--preset", default="toy", help="model size preset: tiny, toy or base")
    tr.add_argument("--init", help="checkpoint folder the stage starts from (t2v: the t2i checkpoint)")
    tr.add_argument("--out", help="where to save the final checkpoint (default RUN_DIR/checkpoint)")
    tr.add_argument("--run-dir", help="folder for logs and previews (default runs/STAGE)")
    for name, kind in (("steps", int), ("batch-size", int), ("lr", float), ("ema-decay", float), ("seed", int),
                       ("preview-every", int)):
        tr.add_argument(f"--{name}", type=kind)
    tr.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    tr.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    tr.set_defaults(func=train_command)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main()
