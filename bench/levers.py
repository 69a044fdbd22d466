"""Levers for keeping the digit to the last frame (docs/paper.md §10): sampling settings compared on the same clips.

Every setting generates the same prompts from the same noise (the prompts and seeds of `evaluate --seed K`'s
kind: random "the digit k moves d"), batch after batch, the settings taking turns so that load from other
processes hits them alike. After each batch the running scores go to --out (JSON): the digit classifier's
digit / direction / same-digit-in-all-frames scores (metrics.py), spurious strokes (strokes.py), time per clip,
each clip's same-digit outcome, and, against the first setting, the clips that keep their digit only with the
setting or only without it.
A setting is pipeline keyword arguments over DEFAULTS (DDIM-50, eta 0, guidance 7.5: `generate`'s defaults
before eta = 1 won here), e.g. "shared_noise=0.3,guidance_scale=10"; "" is DEFAULTS themselves.

    OMP_NUM_THREADS=1 python bench/levers.py --seed 2 --num-videos 300 --settings "" "shared_noise=0.3" \\
        --out runs/levers.json                     # the shipped t2v model, CPU: ~8 s per clip and setting

`--demo` scores one clip instead: `make demo`'s (`generate --prompt P --seed 0`), its spurious strokes per frame.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from minimagic.data import DIRECTION_NAMES, caption_for
from minimagic.device import pick_device
from minimagic.metrics import NO_DIGIT, DigitClassifier, parse_caption, video_scores
from minimagic.pipeline import TextToVideoPipeline
from minimagic.strokes import spurious_strokes

# the baseline every lever was compared with: `generate`'s defaults until eta = 1 won (docs/results.md)
DEFAULTS = {"num_inference_steps": 50, "guidance_scale": 7.5, "sampler": "ddim", "eta": 0.0, "shared_noise": 0.0}


def parse_setting(text: str) -> dict:
    """"key=value,key=value" -> pipeline keyword arguments over DEFAULTS (numbers as float, else str)."""
    setting = dict(DEFAULTS)
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        kind = type(DEFAULTS.get(key, ""))
        numeric = kind is str or value.replace(".", "", 1).isdigit()
        if key not in DEFAULTS or not value or not numeric:
            raise ValueError(f"setting {text!r}: each item must be KEY=VALUE with KEY in {sorted(DEFAULTS)}")
        setting[key] = kind(float(value)) if kind in (int, float) else value
    return setting


def prompts_for(num_videos: int, seed: int) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    digits = torch.randint(10, (num_videos,), generator=generator)
    directions = torch.randint(len(DIRECTION_NAMES), (num_videos,), generator=generator)
    return [caption_for([d], [k]) for d, k in zip(digits.tolist(), directions.tolist(), strict=True)]


def summary(clips: dict, seconds: float) -> dict:
    same = torch.cat(clips["same_digit"]).float()  # (N,)
    return {"clips": len(same), "seconds_per_clip": round(seconds / len(same), 2),
            "digit_accuracy": round(torch.cat(clips["digit"]).mean().item(), 4),
            "direction_accuracy": round(torch.cat(clips["direction"]).float().mean().item(), 4),
            "identity_consistency": round(same.mean().item(), 4),
            "spurious_strokes": round(torch.cat(clips["strokes"]).mean().item(), 5),
            "same_digit_per_clip": same.int().tolist()}


@torch.no_grad()
def demo_strokes(pipe: TextToVideoPipeline, settings: list[str], prompt: str, seed: int = 0) -> dict:
    """Per setting, the spurious strokes of each frame of the clip `generate --prompt prompt --seed seed` makes."""
    return {text or "defaults": [round(share, 4) for share in spurious_strokes(pipe(
        [prompt], generator=torch.Generator().manual_seed(seed), **parse_setting(text)))[0].tolist()]
        for text in settings}


@torch.no_grad()
def compare(pipe: TextToVideoPipeline, settings: list[str], num_videos: int, seed: int, batch_size: int,
            out: Path | None, first_clip: int = 0) -> dict:
    classifier, prompts = DigitClassifier.from_pretrained(), prompts_for(num_videos, seed)
    parsed = {text: parse_setting(text) for text in settings}
    clips = {text: {"digit": [], "direction": [], "same_digit": [], "strokes": []} for text in settings}
    seconds, results = dict.fromkeys(settings, 0.0), {}
    for start in range(first_clip, num_videos, batch_size):
        batch = prompts[start : start + batch_size]
        directions = torch.tensor([parse_caption(p)[0][1] for p in batch])  # (b,)
        for text, setting in parsed.items():
            tick = time.perf_counter()
            videos = pipe(batch, generator=torch.Generator().manual_seed(seed * 100_000 + start), **setting)
            seconds[text] += time.perf_counter() - tick
            scores = video_scores(videos, batch, classifier)
            predicted = scores["predicted_digits"]  # (b, F)
            clips[text]["digit"].append(scores["clip_digit_accuracy"])
            clips[text]["direction"].append(scores["predicted_direction"] == directions)
            clips[text]["same_digit"].append((predicted == predicted[:, :1]).all(1) & (predicted[:, 0] != NO_DIGIT))
            clips[text]["strokes"].append(spurious_strokes(videos).mean(1))
        results = {"seed": seed, "batch_size": batch_size, "first_clip": first_clip,
                   "settings": {text or "defaults": {**parsed[text], **summary(clips[text], seconds[text])}
                                for text in settings}}
        first = torch.cat(clips[settings[0]]["same_digit"])
        for text in settings[1:]:
            other = torch.cat(clips[text]["same_digit"])
            results["settings"][text or "defaults"]["kept_only_with / only_without"] = [
                int((other & ~first).sum()), int((first & ~other).sum())]
        if out is not None:
            out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="t2v pipeline folder (default: the shipped one)")
    parser.add_argument("--settings", nargs="+", default=["", "shared_noise=0.3"])
    parser.add_argument("--seed", type=int, default=2, help="2: the validation seed (1 is held out)")
    parser.add_argument("--num-videos", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--first-clip", type=int, default=0, help="resume after a run that stopped at this clip "
                        "(a multiple of --batch-size: the same prompts and noise as an uninterrupted run)")
    parser.add_argument("--out", type=Path, help="JSON written after every batch")
    parser.add_argument("--demo", metavar="PROMPT", help="only the clip `generate --prompt PROMPT --seed 0` makes")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.num_videos < 1 or args.batch_size < 1 or not 0 <= args.first_clip < args.num_videos:
        raise ValueError("--num-videos and --batch-size must be >= 1, --first-clip in [0, --num-videos)")
    if args.first_clip % args.batch_size:
        raise ValueError(f"--first-clip {args.first_clip} must be a multiple of --batch-size {args.batch_size}")
    pipe = TextToVideoPipeline.from_pretrained(args.checkpoint, device=pick_device(args.device))
    if args.demo:
        print(json.dumps({"prompt": args.demo, "spurious_strokes": demo_strokes(pipe, args.settings, args.demo)}))
        return
    results = compare(pipe, args.settings, args.num_videos, args.seed, args.batch_size, args.out, args.first_clip)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
