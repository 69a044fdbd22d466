"""Command line: `python -m minimagic train STAGE ...` and `python -m minimagic generate ...`."""

import argparse
import inspect
import os
import shlex
import sys
from pathlib import Path

from minimagic.train import TrainConfig


def train_command(args: argparse.Namespace) -> None:
    import torch

    from minimagic import distributed
    from minimagic.stages import STAGES
    from minimagic.train import train

    given = (("preset", args.preset), ("init", args.init), ("temporal_weight", args.temporal_weight),
             ("latent_noise", args.latent_noise), ("num_clips", args.num_clips),
             ("data", args.data), ("data_root", args.data_root), ("split_file", args.split_file),
             ("sd_vae", args.sd_vae), ("text_encoder", args.text_encoder))
    stage_options = {name: value for name, value in given if value is not None}
    accepted = inspect.signature(STAGES[args.stage]).parameters
    if unknown := [f"--{name.replace('_', '-')}" for name in stage_options if name not in accepted]:
        raise ValueError(f"the {args.stage} stage takes no {', '.join(unknown)}")
    torch.manual_seed(TrainConfig.seed if args.seed is None else args.seed)  # the new layers the stage builds
    stage = STAGES[args.stage](**stage_options)
    keys = ("steps", "batch_size", "lr", "ema_decay", "seed", "device", "precision", "preview_every",
            "checkpoint_every", "log_every", "grad_accum")
    overrides = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    cfg = TrainConfig(**{**getattr(stage, "defaults", {}), **overrides})
    run_dir = Path(args.resume or args.run_dir or f"runs/{args.stage}")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = f"torchrun --nproc_per_node {world_size}" if world_size > 1 else "python"
    command = f"{launcher} -m minimagic " + shlex.join(sys.argv[1:])
    out = Path(args.out or run_dir / "checkpoint")

    def save(model, step: int | None = None) -> None:
        stage.save(model, out, command=command, **({"step": step} if step else {"step": cfg.steps}))

    model = train(stage, cfg, run_dir, save, resume=args.resume is not None)
    if distributed.is_main():
        save(model)
        print(f"saved {args.stage} checkpoint to {out}")
    distributed.teardown()


def generate_command(args: argparse.Namespace) -> None:
    import torch

    from minimagic.pipeline import TextToVideoPipeline
    from minimagic.streaming import read_first_frame, stream_to_folder
    from minimagic.train import pick_device
    from minimagic.video import WRITE_FORMATS, save_video

    if Path(args.out).suffix.lower() not in WRITE_FORMATS:  # before minutes of sampling, not after
        raise ValueError(f"--out {args.out}: the video must be one of {', '.join(WRITE_FORMATS)}")
    pipe = TextToVideoPipeline.from_pretrained(args.checkpoint, device=pick_device(args.device))
    kind = "text-to-video" if pipe.is_video else "text-to-image (no text-to-video checkpoint yet: one frame)"
    print(f"{kind} model from {args.checkpoint or 'the shipped checkpoint'}")
    generator = torch.Generator().manual_seed(args.seed)
    first = read_first_frame(args.first_frame, pipe.vae.config.in_channels) if args.first_frame else None
    if args.stream:  # every frame written to OUT_STEM/frame_NNNN.png as soon as it is finished
        if args.interpolate:
            raise ValueError("--stream writes keyframes as they finish: drop --interpolate")
        if args.sampler != "ddim":
            raise ValueError("--stream samples with DDIM: drop --sampler")
        video = stream_to_folder(pipe, args.prompt, args.num_frames or (pipe.unet.num_frames if pipe.is_video else 1),
                                 Path(args.out).with_suffix(""), first, num_inference_steps=args.steps,
                                 guidance_scale=args.guidance, fps=args.fps, generator=generator)
    else:
        video = pipe([args.prompt], num_frames=args.num_frames, num_inference_steps=args.steps,
                     guidance_scale=args.guidance, fps=args.fps, generator=generator, progress=True,
                     interpolate=args.interpolate, first_frame=first, sampler=args.sampler)[0]  # (F, C, H, W)
    fps = args.fps * (args.interpolate + 1)  # the in-between frames keep the keyframes' pace
    print(f"wrote {save_video(video, args.out, fps=fps)}: {tuple(video.shape)} for {args.prompt!r}")


def evaluate_command(args: argparse.Namespace) -> None:
    import json

    from minimagic.evaluate import evaluate

    given = (("num_videos", args.num_videos), ("per_digit", args.per_digit), ("guidance_scale", args.guidance),
             ("steps", args.steps), ("sampler", args.sampler))
    options = {k: v for k, v in given if v is not None}
    results = evaluate(args.checkpoint, out=args.out, seed=args.seed, **options)
    print(json.dumps(results, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minimagic", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    tr = commands.add_parser("train", help="train one stage (vae, t2i, t2v, videovae, interp)")
    tr.add_argument("stage", choices=["vae", "t2i", "t2v", "videovae", "interp"])
    tr.add_argument("--preset", help="model size preset: tiny, toy (default) or base")
    tr.add_argument("--init", help="checkpoint folder to start from (t2v: a t2i pipeline, or a t2v one to "
                    "train further; videovae: a vae, or a videovae to train further; interp: a t2v pipeline)")
    tr.add_argument("--data", help="training data: moving-digits (default), or ucf10 / ucf10-256 (UCF-101 "
                    "subsets, with --data-root; see minimagic/videofolder.py)")
    tr.add_argument("--data-root", help="the video folder: ROOT/<ClassName>/*.avi, e.g. the unpacked UCF-101")
    tr.add_argument("--split-file", help="only the videos listed in this file, e.g. ucfTrainTestlist/trainlist01.txt")
    tr.add_argument("--sd-vae", help="t2i: Stable Diffusion's VAE, a folder holding diffusers-format vae/ weights "
                    "(instead of --init; needed by --preset base)")
    tr.add_argument("--text-encoder", help="t2i: a Hugging Face text encoder folder (--preset base: a CLIP one, "
                    "e.g. openai/clip-vit-large-patch14)")
    tr.add_argument("--temporal-weight", type=float, help="videovae: weight w of the frame-difference loss term")
    tr.add_argument("--latent-noise", type=float, help="videovae: the largest std of the per-frame noise added to "
                    "the training latents, like a sampler's residual error (default 0: none)")
    tr.add_argument("--num-clips", type=int, help="t2i, t2v, videovae: training clips, encoded once (default 6000)")
    tr.add_argument("--out", help="where to save the final checkpoint (default RUN_DIR/checkpoint)")
    tr.add_argument("--run-dir", help="folder for logs and previews (default runs/STAGE)")
    for name, kind in (("steps", int), ("batch-size", int), ("lr", float), ("ema-decay", float), ("seed", int),
                       ("preview-every", int), ("checkpoint-every", int), ("log-every", int),
                       ("grad-accum", int)):
        tr.add_argument(f"--{name}", type=kind)
    tr.add_argument("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR (same options)")
    tr.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    tr.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    tr.set_defaults(func=train_command)
    gen = commands.add_parser("generate", help="generate a video from a text prompt")
    gen.add_argument("--prompt", required=True, help='e.g. "the digit seven moves left"')
    gen.add_argument("--out", default="video.gif", help="output .gif or .mp4")
    gen.add_argument("--checkpoint", help="pipeline folder (default: the shipped toy checkpoint)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--steps", type=int, default=50, help="DDIM steps (50 and guidance 7.5: the best of the "
                     "settings tried on validation seed 2, README)")
    gen.add_argument("--sampler", choices=["ddim", "dpm++2m"], default="ddim",
                     help="keyframe sampler: DDIM or DPM-Solver++ (2M)")
    gen.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale")
    gen.add_argument("--num-frames", type=int, help="frames to generate (default: as trained; more are streamed)")
    gen.add_argument("--first-frame", metavar="PNG", help="image-to-video: this image is frame 0 (image_size square)")
    gen.add_argument("--stream", action="store_true", help="write each frame to OUT_STEM/frame_NNNN.png as soon as "
                     "it is finished (frame after frame with the KV cache), then the video")
    gen.add_argument("--interpolate", type=int, default=0, metavar="K",
                     help="fill K frames between neighbouring keyframes with the shipped interpolation model")
    gen.add_argument("--fps", type=float, default=8.0, help="frame rate v of the keyframes: the FPS condition of "
                     "the t2v model and of the written file, times K + 1 (Moving digits: 8; ucf10: 6.25)")
    gen.add_argument("--device", default="auto")
    gen.set_defaults(func=generate_command)
    ev = commands.add_parser("evaluate", help="measure a checkpoint (vae, t2i, t2v, videovae or interp)")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--num-videos", type=int, help="t2v: clips to generate (default 100)")
    ev.add_argument("--per-digit", type=int, help="t2i: images per digit and guidance scale (default 50)")
    ev.add_argument("--guidance", type=float, help="t2v: classifier-free guidance scale (default 4)")
    ev.add_argument("--steps", type=int, help="DDIM steps of the samplers (default 25)")
    ev.add_argument("--sampler", choices=["ddim", "dpm++2m"], help="t2v: the keyframe sampler (default ddim)")
    ev.add_argument("--seed", type=int, default=1, help="seed of prompts and noise (training never uses 1)")
    ev.add_argument("--out", help="write OUT.json and OUT.md")
    ev.set_defaults(func=evaluate_command)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main()
