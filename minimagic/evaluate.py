"""Measure a checkpoint the way the README reports it: `python -m minimagic evaluate --checkpoint DIR`.

vae: reconstruction PSNR on held-out test digits (never seen in training);
t2i: for "the digit <k>", the fraction of generated images the digit classifier reads as <k>, per guidance
     scale;
t2v: for random "the digit <k> moves <direction>" prompts and seeds that training never used, the fraction
     of frames showing digit <k>, of clips moving in the captioned direction, and of clips whose digit keeps
     its identity in every frame.
Results are written as JSON and as a Markdown table.
"""

import json
import time
from pathlib import Path

import torch

from minimagic import checkpoint
from minimagic.data import DIRECTION_NAMES, MovingDigits, caption_for
from minimagic.metrics import DigitClassifier, psnr, video_scores
from minimagic.pipeline import TextToVideoPipeline
from minimagic.vae import VAE

GUIDANCE_SCALES = (1.0, 2.0, 4.0, 7.5)


@torch.no_grad()
def evaluate_vae(directory: Path, num_images: int = 1000, **_) -> dict:
    vae = VAE.from_pretrained(directory)
    data = MovingDigits("test", image_mode=True, length=num_images, seed=1)
    x = torch.stack([data[i]["image"] for i in range(num_images)])  # (N, 1, H, W)
    recon = torch.cat([vae.decode(vae.encode(chunk).mode()).clamp(-1, 1) for chunk in x.split(100)])
    return {"held_out_images": num_images, "psnr_db": round(psnr(recon, x).mean().item(), 2)}


@torch.no_grad()
def evaluate_t2i(directory: Path, per_digit: int = 50, seed: int = 1, steps: int = 25,
                 guidance_scales: tuple[float, ...] = GUIDANCE_SCALES, **_) -> dict:
    pipe, classifier = TextToVideoPipeline.from_pretrained(directory), DigitClassifier.from_pretrained()
    digits = torch.arange(10).repeat_interleave(per_digit)  # (10 * per_digit,)
    prompts = [caption_for([d], None) for d in digits.tolist()]
    results = {"images_per_digit": per_digit, "ddim_steps": steps, "accuracy": {}}
    for scale in guidance_scales:
        generator = torch.Generator().manual_seed(seed)
        images = torch.cat([pipe(prompts[i : i + 100], num_inference_steps=steps, guidance_scale=scale,
                                 generator=generator)[:, 0] for i in range(0, len(prompts), 100)])
        predicted = classifier(images).argmax(-1)  # (N,)
        results["accuracy"][str(scale)] = round((predicted == digits).float().mean().item(), 4)
    return results


@torch.no_grad()
def evaluate_t2v(directory: Path, num_videos: int = 100, seed: int = 1, steps: int = 25,
                 guidance_scale: float = 4.0, **_) -> dict:
    pipe, classifier = TextToVideoPipeline.from_pretrained(directory), DigitClassifier.from_pretrained()
    generator = torch.Generator().manual_seed(seed)
    digits = torch.randint(10, (num_videos,), generator=generator)
    directions = torch.randint(len(DIRECTION_NAMES), (num_videos,), generator=generator)
    prompts = [caption_for([d], [k]) for d, k in zip(digits.tolist(), directions.tolist(), strict=True)]
    start = time.time()
    videos = torch.cat([pipe(prompts[i : i + 25], num_inference_steps=steps, guidance_scale=guidance_scale,
                             generator=generator) for i in range(0, num_videos, 25)])  # (N, F, 1, H, W)
    seconds = (time.time() - start) / num_videos
    scores = {k: round(float(v), 4) for k, v in video_scores(videos, prompts, classifier).items()
              if not torch.is_tensor(v) or v.ndim == 0}
    return {"videos": num_videos, "ddim_steps": steps, "guidance_scale": guidance_scale,
            "seconds_per_clip": round(seconds, 2), **scores}


EVALUATORS = {"vae": evaluate_vae, "t2i": evaluate_t2i, "t2v": evaluate_t2v}


def markdown(name: str, results: dict) -> str:
    rows = [(k, v) for k, v in results.items() if not isinstance(v, dict)]
    rows += [(f"{k} @ {sub}", v) for k, d in results.items() if isinstance(d, dict) for sub, v in d.items()]
    return "\n".join([f"| {name} | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]) + "\n"


def evaluate(directory: str | Path, out: str | Path | None = None, **options) -> dict:
    """Evaluate the checkpoint in `directory` by its stage; write `out`.json and `out`.md if given."""
    directory = Path(directory)
    stage = checkpoint.load_meta(directory).get("stage")
    if stage not in EVALUATORS:
        raise ValueError(f"{directory} holds a '{stage}' checkpoint; evaluate knows {sorted(EVALUATORS)}")
    torch.manual_seed(0)
    results = {"checkpoint": str(directory), "stage": stage, **EVALUATORS[stage](directory, **options)}
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(directory.name, results))
    return results
