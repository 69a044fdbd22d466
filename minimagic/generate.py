"""`python -m minimagic generate`: a prompt -> keyframes (docs/paper.md §1.1, stage 1), optionally streamed frame by
frame (§10), interpolated (stage 2) and super-resolved (stage 3), written as a video."""

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from minimagic.flags import check_output

GUIDANCE = 7.5  # clips of the trained length: the best of the settings tried on validation seed 2 (README)
STREAM_GUIDANCE = 4.0  # streamed clips: the digit kept in all 32 frames of 97% of validation clips, 70% at 7.5

if TYPE_CHECKING:
    import torch


def read_first_frame(path: str | Path, channels: int) -> "torch.Tensor":
    """An image file (PNG, ...) as a first frame (channels, H, W) in [-1, 1], for image-to-video."""
    import numpy as np
    import torch
    from PIL import Image

    if not Path(path).is_file():
        raise FileNotFoundError(f"first frame image not found: {path}")
    with Image.open(path) as image:
        pixels = torch.from_numpy(np.array(image.convert("L" if channels == 1 else "RGB"))).float()  # (H, W[, 3])
    pixels = pixels[None] if channels == 1 else pixels.permute(2, 0, 1)  # (C, H, W)
    return pixels / 127.5 - 1


def generate_command(args: argparse.Namespace, argv: list[str]) -> None:
    import torch

    from minimagic.device import pick_device
    from minimagic.pipeline import TextToVideoPipeline
    from minimagic.streaming import stream_to_folder
    from minimagic.superres import SuperResolution
    from minimagic.video import WRITE_FORMATS, save_video

    out = Path(args.out)  # everything checked before minutes of sampling, not after
    if out.suffix.lower() not in WRITE_FORMATS:
        raise ValueError(f"--out {args.out}: the video must be one of {', '.join(WRITE_FORMATS)}")
    check_output(out, "--out video")
    if not 0 < args.fps <= 1000:
        raise ValueError(f"--fps must be in (0, 1000] frames per second, got {args.fps}")
    if args.interpolate < 0:
        raise ValueError(f"--interpolate must be >= 0, got {args.interpolate}")
    if args.stream and (args.interpolate or args.sampler != "ddim" or args.upscale > 1 or args.shared_noise):
        raise ValueError("--stream writes DDIM keyframes as they finish: drop --interpolate, --sampler, --upscale "
                         "and --shared-noise")
    eta = (1.0 if args.sampler == "ddim" else 0.0) if args.eta is None else args.eta  # stochastic DDIM by default
    if eta < 0:
        raise ValueError(f"--eta must be >= 0, got {eta}")
    pipe = TextToVideoPipeline.from_pretrained(args.checkpoint, device=pick_device(args.device))
    pipe.superres = SuperResolution.from_pretrained(args.superres).to(pipe.device) if args.superres else None
    kind = "text-to-video" if pipe.is_video else "text-to-image (no text-to-video checkpoint yet: one frame)"
    print(f"{kind} model from {args.checkpoint or 'the shipped checkpoint'}")
    generator = torch.Generator().manual_seed(args.seed)
    first = read_first_frame(args.first_frame, pipe.vae.config.in_channels) if args.first_frame else None
    trained_frames = pipe.unet.num_frames if pipe.is_video else 1
    streamed = args.stream or first is not None or (args.num_frames or 0) > trained_frames
    guidance = args.guidance if args.guidance is not None else STREAM_GUIDANCE if streamed else GUIDANCE
    if args.stream:  # every frame written to OUT_STEM/frame_NNNN.png as soon as it is finished
        num_frames = args.num_frames or trained_frames
        video = stream_to_folder(pipe, args.prompt, num_frames, out.with_suffix(""), first,
                                 num_inference_steps=args.steps, guidance_scale=guidance, eta=eta,
                                 fps=args.fps, generator=generator)
    else:
        video = pipe([args.prompt], num_frames=args.num_frames, num_inference_steps=args.steps,
                     guidance_scale=guidance, fps=args.fps, generator=generator, progress=True,
                     interpolate=args.interpolate, first_frame=first, sampler=args.sampler,
                     upscale=args.upscale, shared_noise=args.shared_noise, eta=eta)[0]  # (F, C, H, W)
    fps = args.fps * (args.interpolate + 1)  # the in-between frames keep the keyframes' pace
    print(f"wrote {save_video(video, args.out, fps=fps)}: {tuple(video.shape)} for {args.prompt!r}")
