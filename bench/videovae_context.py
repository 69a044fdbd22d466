"""Do the VideoVAE's temporal layers use the other frames? Each clip decoded whole, and each frame alone.

`evaluate`'s `videovae_single_frames` ablation asks this on clean and on generated latents. This script asks it
where context should pay most (docs/paper.md §5, §10): latents with noise of std sigma drawn anew for every
frame (a sampler's errors, exaggerated), on held-out clips as they are (the digit moving 3 px per frame) and
with the digit held still (speed 0), where a decoder that averaged each position over the earlier frames would
cut the noise. Per setting: the mean squared error of the decoding (clamped to [-1, 1], as shown) against the
real clip, decoded whole and frame by frame; and of the last frame alone, which sees 7 earlier frames.

    PYTHONPATH=. python bench/videovae_context.py data/checkpoints/videovae-moving-digits RUN ... \\
        --md docs/results/videovae-context.md
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from minimagic.data import MovingDigits
from minimagic.vae import VAE, VAEConfig
from minimagic.videovae import VideoVAE

MOTIONS = {"moving": 3.0, "still": 0.0}  # pixels per frame: the data's speed, and the digit held still
CHUNK = 20  # clips decoded at once


@torch.no_grad()
def context_errors(model: VideoVAE, video: torch.Tensor, sigma: float, generator: torch.Generator) -> dict:
    """Squared errors (B, F) of `video` (B, F, C, H, W) decoded from its latents + sigma * eps (eps per frame),
    decoded whole and each frame alone."""
    latents = model.encode_video(video)  # (B, F, c, h, w)
    latents = latents + sigma * torch.randn(latents.shape, generator=generator)
    decoded = {"whole": model.decode_video(latents), "alone": model.decode_frames_alone(latents)}
    return {name: ((frames.clamp(-1, 1) - video) ** 2).mean(dim=(2, 3, 4)) for name, frames in decoded.items()}


def measure(models: dict, clips: int, noise: list[float], seed: int) -> list[dict]:
    rows = []
    for motion, speed in MOTIONS.items():
        data = MovingDigits("test", length=clips, seed=seed, speed=speed)
        video = torch.stack([data[i]["video"] for i in range(clips)])  # (N, F, 1, H, W)
        for sigma in noise:
            for name, model in models.items():  # every model sees the same noise
                generator = torch.Generator().manual_seed(seed)
                chunks = [context_errors(model, chunk, sigma, generator) for chunk in video.split(CHUNK)]
                error = {key: torch.cat([c[key] for c in chunks]) for key in ("whole", "alone")}  # (N, F) each
                rows.append({"model": name, "motion": motion, "noise": sigma,
                             **{f"mse_{key}": round(e.mean().item(), 6) for key, e in error.items()},
                             **{f"last_frame_{key}": round(e[:, -1].mean().item(), 6) for key, e in error.items()}})
    return rows


def markdown(rows: list[dict], command: str, clips: int) -> str:
    lines = ["# Does the VideoVAE use the other frames? (bench/videovae_context.py)", "", f"`{command}`", "",
             f"{clips} held-out clips (MovingDigits test split), latents + noise of std sigma drawn for every "
             "frame; mean squared error of the clamped decoding against the real clip, decoded whole and each "
             "frame alone; the last frame sees 7 earlier ones.", "",
             "| model | digit | sigma | MSE whole | MSE alone | last frame whole | last frame alone |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['motion']} | {r['noise']} | {r['mse_whole']:.5f} | {r['mse_alone']:.5f} | "
              f"{r['last_frame_whole']:.5f} | {r['last_frame_alone']:.5f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", type=Path, help="VideoVAE checkpoint folders")
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument("--seed", type=int, default=1, help="held-out clips and noise (1: the held-out seed)")
    parser.add_argument("--quick", action="store_true", help="a tiny random VideoVAE, 2 clips: checks the code")
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    parser.add_argument("--md", type=Path, help="and as a Markdown table")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.quick:
        models = {"tiny random": VideoVAE.from_vae(VAE(VAEConfig.preset("tiny")))}
        for layer in models["tiny random"].temporal.values():  # active temporal layers (they start at zero)
            torch.nn.init.normal_(layer.to_out.weight, std=0.5)
        args.clips = 2
    elif not args.checkpoints:
        parser.error("give VideoVAE checkpoint folders, or --quick")
    else:
        models = {str(path): VideoVAE.from_pretrained(path) for path in args.checkpoints}
    rows = measure(models, args.clips, args.noise, args.seed)
    command = "python bench/videovae_context.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    text = markdown(rows, command, args.clips)
    print(text)
    if args.out:
        args.out.write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    if args.md:
        args.md.write_text(text)
    return rows


if __name__ == "__main__":
    main()
