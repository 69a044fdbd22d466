"""Command line: `python -m minimagic train STAGE ...`, `generate ...` and `evaluate ...`.

Every error is one line on stderr (`error: ...`, exit status 2 for bad input), checked before any slow
work where it can be; `MINIMAGIC_TRACEBACK=1` shows the traceback of an unexpected one.
"""

import argparse
import os
import shlex
import sys
from dataclasses import fields
from pathlib import Path

from minimagic import allocator
from minimagic.flags import Parser, add_flags, check_output, number
from minimagic.generate import generate_command
from minimagic.paths import DEFAULT_FPS
from minimagic.train import TrainConfig


def train_command(args: argparse.Namespace, argv: list[str]) -> None:
    from minimagic.device import pick_device, pick_precision
    from minimagic.stages import get_stage
    from minimagic.train_state import claim_run_folder, release_run_folder

    Stage = get_stage(args.stage)
    options = {f.name: getattr(args, f.name) for f in fields(Stage.Options) if getattr(args, f.name) is not None}
    options = Stage.Options(**{k: None if v == "none" and k == "init" else v for k, v in options.items()})
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    cfg = TrainConfig(**{**Stage.defaults, **given})
    pick_precision(cfg.precision, pick_device(cfg.device))  # both checked before the stage's slow set-up
    run_dir = Path(args.resume or args.run_dir or f"runs/{args.stage}")
    out = Path(args.out or run_dir / "checkpoint")
    check_output(run_dir / "log.csv", "--run-dir")
    check_output(out, "--out")
    if os.environ.get("RANK", "0") == "0":
        claim_run_folder(run_dir, args.resume is not None, args.overwrite)  # before the stage's slow set-up
    try:
        run_stage(Stage, options, cfg, run_dir, out, argv, args)
    finally:
        release_run_folder(run_dir)


def run_stage(Stage, options, cfg: TrainConfig, run_dir: Path, out: Path, argv: list[str], args) -> None:
    import torch

    from minimagic import distributed
    from minimagic.train import train

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = f"torchrun --nproc_per_node {world_size}" if world_size > 1 else "python"
    command = f"{launcher} -m minimagic " + shlex.join(argv)
    torch.manual_seed(cfg.seed)  # the new layers the stage builds: a recorded command reproduces its checkpoint
    stage = Stage(options)

    def save(model, step: int | None = None) -> None:
        stage.save(model, out, command=command, step=step or cfg.steps)

    model = train(stage, cfg, run_dir, save, resume=args.resume is not None, overwrite=args.overwrite)
    if distributed.is_main():
        save(model)
        print(f"saved {args.stage} checkpoint to {out}")
    distributed.teardown()


def evaluate_command(args: argparse.Namespace, argv: list[str]) -> None:
    import json

    from minimagic.stages import evaluate

    given = (("num_videos", args.num_videos), ("per_digit", args.per_digit), ("guidance_scale", args.guidance),
             ("steps", args.steps), ("sampler", args.sampler), ("shared_noise", args.shared_noise),
             ("eta", args.eta))
    if any(value is not None and value < 1 for name, value in given if name in ("num_videos", "per_digit", "steps")):
        raise ValueError("--num-videos, --per-digit and --steps must be >= 1")
    if args.out is not None:
        check_output(Path(args.out), "--out")
    results = evaluate(args.checkpoint, out=args.out, seed=args.seed, **{k: v for k, v in given if v is not None})
    print(json.dumps(results, indent=2))


def parser() -> Parser:
    from minimagic.stages import STAGES

    root = Parser(prog="python -m minimagic", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    tr = commands.add_parser("train", help=f"train one stage ({', '.join(STAGES)})")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", help="where to save the final checkpoint (default RUN_DIR/checkpoint)")
    common.add_argument("--run-dir", help="folder for logs, previews and the training state (default runs/STAGE)")
    common.add_argument("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR (same options)")
    common.add_argument("--overwrite", action="store_true", help="start a new run in a used --run-dir")
    stages = tr.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, Stage in STAGES.items():
        stage_parser = stages.add_parser(name, parents=[common], help=Stage.__doc__.splitlines()[0])
        add_flags(stage_parser, TrainConfig, Stage.defaults)
        add_flags(stage_parser, Stage.Options)
    tr.set_defaults(func=train_command)
    gen = commands.add_parser("generate", help="generate a video from a text prompt")
    gen.add_argument("--prompt", required=True, help='e.g. "the digit seven moves left"')
    gen.add_argument("--out", default="video.gif", help="output .gif or .mp4")
    gen.add_argument("--checkpoint", help="pipeline folder (default: the shipped toy checkpoint)")
    gen.add_argument("--seed", type=number(int), default=0)
    gen.add_argument("--steps", type=number(int), default=50, help="DDIM steps (50 and guidance 7.5: the best of "
                     "the settings tried on validation seed 2, README)")
    gen.add_argument("--guidance", type=number(float), help="classifier-free guidance scale (default 7.5; streamed "
                     "clips, longer than trained or from --first-frame or --stream: 4, chosen on validation seed 2)")
    gen.add_argument("--sampler", choices=["ddim", "dpm++2m"], default="ddim",
                     help="keyframe sampler: DDIM or DPM-Solver++ (2M)")
    gen.add_argument("--shared-noise", type=number(float), default=0.0, metavar="A",
                     help="share a fraction A of the starting noise's variance across frames (0 <= A <= 1)")
    gen.add_argument("--eta", type=number(float), help="DDIM's eta: 1 (the default, chosen on validation seed 2) adds "
                     "DDPM's posterior noise at every step, 0 is deterministic; dpm++2m: 0 (default) or its SDE form")
    gen.add_argument("--num-frames", type=number(int), help="frames to generate (default: as trained; more are "
                     "streamed)")
    gen.add_argument("--first-frame", metavar="PNG", help="image-to-video: this image is frame 0 (image_size square)")
    gen.add_argument("--stream", action="store_true", help="write each frame to OUT_STEM/frame_NNNN.png as soon as "
                     "it is finished (frame after frame with the KV cache), then the video")
    gen.add_argument("--interpolate", type=number(int), default=0, metavar="K",
                     help="fill K frames between neighbouring keyframes with the shipped interpolation model")
    gen.add_argument("--upscale", type=number(int), choices=[1, 2], default=1, help="2: super-resolve every frame 2x "
                     "(64 -> 128) with --superres, a model trained at 32 -> 64: not measured against a 128 px truth")
    gen.add_argument("--superres", metavar="CHECKPOINT", help="the --upscale model (default: the shipped one)")
    gen.add_argument("--fps", type=number(float), default=DEFAULT_FPS, help="frame rate v of the keyframes: the FPS "
                     "condition of the t2v model and of the written file, times K + 1 (Moving digits: 8; ucf10: 6.25)")
    gen.add_argument("--device", default="auto")
    gen.set_defaults(func=generate_command)
    ev = commands.add_parser("evaluate", help=f"measure a checkpoint ({', '.join(STAGES)})")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--num-videos", type=number(int), help="t2v: clips to generate (default 100)")
    ev.add_argument("--per-digit", type=number(int), help="t2i: images per digit and guidance scale (default 50)")
    ev.add_argument("--guidance", type=number(float), help="t2v: guidance scale (default 4; videovae 7.5)")
    ev.add_argument("--steps", type=number(int), help="sampler steps (default 25; superres 10, videovae 50)")
    ev.add_argument("--sampler", choices=["ddim", "dpm++2m"], help="t2v: the keyframe sampler (default ddim)")
    ev.add_argument("--shared-noise", type=number(float), metavar="A", help="t2v: noise shared across frames (0)")
    ev.add_argument("--eta", type=number(float), help="t2v: DDIM's eta (default 0, deterministic; videovae 1)")
    ev.add_argument("--seed", type=number(int), default=1, help="seed of prompts and noise (training never uses 1)")
    ev.add_argument("--out", help="write OUT.json and OUT.md")
    ev.set_defaults(func=evaluate_command)
    return root


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    allocator.configure()
    cli = parser()
    args, unknown = cli.parse_known_args(argv)
    if unknown:
        command = f"the {args.stage} stage" if args.command == "train" else args.command
        cli.error(f"{command} takes no {' '.join(unknown)}")
    try:
        args.func(args, argv)
    except (ValueError, OSError) as error:
        cli.exit(2, f"error: {' '.join(str(error).split())}\n")
    except KeyboardInterrupt:
        cli.exit(130, "error: interrupted\n")
    except Exception as error:  # a bug, or a case nobody checked: still one line, the traceback on request
        if os.environ.get("MINIMAGIC_TRACEBACK"):
            raise
        cli.exit(1, f"error: {type(error).__name__}: {' '.join(str(error).split())} (MINIMAGIC_TRACEBACK=1 shows "
                 "where)\n")


if __name__ == "__main__":
    main()
