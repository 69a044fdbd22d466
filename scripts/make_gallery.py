"""The README's gallery: one GIF grid of clips that the shipped text-to-video model makes for a range of prompts.

Every clip comes from `TextToVideoPipeline.from_pretrained()` (the shipped t2v checkpoint with its VideoVAE)
at the `generate` defaults, 50 DDIM steps with eta = 1 and guidance 7.5, one batch from one seed: nothing is
picked by hand. The grid has ROWS x COLUMNS cells, one prompt each, read left to right, top to bottom; the prompts
cover the ten digits and the eight directions. About a minute on two CPU cores:

    python scripts/make_gallery.py --out docs/figures/gallery.gif
"""

import argparse
from pathlib import Path

import torch
from einops import rearrange

from minimagic.device import pick_device
from minimagic.pipeline import TextToVideoPipeline
from minimagic.video import save_video

PROMPTS = [
    "the digit zero moves right",
    "the digit one moves up",
    "the digit two moves down and to the left",
    "the digit three moves left",
    "the digit four moves up and to the right",
    "the digit five moves down",
    "the digit six moves up and to the left",
    "the digit seven moves down and to the right",
    "the digit eight moves left",
    "the digit nine moves up",
]
COLUMNS = 5
BORDER = 2  # pixels of grey between the cells


def video_grid(videos: torch.Tensor, columns: int, border: int = BORDER) -> torch.Tensor:
    """Tile B clips (B, F, C, H, W) in [-1, 1] into one clip (F, C, rows * (H + border), columns * (W + border)).

    B must be a multiple of `columns`; each cell gets a grey border on its right and bottom."""
    if videos.ndim != 5 or videos.shape[0] % columns:
        raise ValueError(f"need videos (B, F, C, H, W) with B a multiple of {columns}, got {tuple(videos.shape)}")
    padded = torch.nn.functional.pad(videos, (0, border, 0, border), value=0.0)  # (B, F, C, H+b, W+b)
    return rearrange(padded, "(r k) f c h w -> f c (r h) (k w)", k=columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/figures/gallery.gif"))
    parser.add_argument("--checkpoint", type=Path, default=None, help="a t2v pipeline folder (default: shipped)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--eta", type=float, default=1.0, help="DDIM's eta (generate's default: 1)")
    parser.add_argument("--fps", type=float, default=4.0, help="playback speed of the GIF")
    args = parser.parse_args()
    pipe = TextToVideoPipeline.from_pretrained(args.checkpoint, device=pick_device())
    if not pipe.is_video:
        raise ValueError(f"{args.checkpoint or 'the shipped checkpoint'} is a text-to-image model, not text-to-video")
    generator = torch.Generator().manual_seed(args.seed)
    videos = pipe(PROMPTS, num_inference_steps=args.steps, guidance_scale=args.guidance, generator=generator,
                  eta=args.eta, progress=True)  # (B, F, C, H, W)
    path = save_video(video_grid(videos.cpu(), COLUMNS), args.out, fps=args.fps)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB): {len(PROMPTS)} prompts, seed {args.seed}, "
          f"{args.steps} DDIM steps (eta {args.eta}), guidance {args.guidance}")


if __name__ == "__main__":
    main()
