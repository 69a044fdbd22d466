"""Time per clip of the two keyframe samplers (docs/paper.md §6.2): DDIM vs DPM-Solver++ (2M), in one run.

Each round generates the same clips (prompt, noise, guidance, decoding) once with each sampler, the two taking
turns, so that load from other processes hits both alike; the median over rounds is reported, and the ratio
DPM-Solver++ / DDIM. The quality side is `python -m minimagic evaluate --sampler ...` (README).

    OMP_NUM_THREADS=1 python bench/samplers.py --dpm-steps 25      # the shipped t2v model, CPU: a few minutes
"""

import argparse
import statistics
import time

import torch

from minimagic.device import pick_device
from minimagic.pipeline import TextToVideoPipeline

PROMPTS = ("the digit seven moves left", "the digit two moves up", "the digit zero moves right",
           "the digit four moves down")


def seconds_per_clip(pipe: TextToVideoPipeline, sampler: str, steps: int, guidance: float, num_clips: int) -> float:
    """Wall time of pipe(...) for num_clips clips (one batch, decoded), divided by num_clips."""
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(num_clips)]
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, sampler=sampler,
         generator=torch.Generator().manual_seed(0))
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / num_clips


def compare(pipe: TextToVideoPipeline, ddim_steps: int, dpm_steps: int, guidance: float = 7.5, num_clips: int = 4,
            rounds: int = 3) -> dict:
    """Median seconds per clip of each sampler over `rounds` alternating rounds, and their ratio."""
    settings = {"ddim": ddim_steps, "dpm++2m": dpm_steps}
    times = {sampler: [] for sampler in settings}
    for _ in range(rounds):
        for sampler, steps in settings.items():
            times[sampler].append(seconds_per_clip(pipe, sampler, steps, guidance, num_clips))
    median = {sampler: statistics.median(values) for sampler, values in times.items()}
    return {"ddim_steps": ddim_steps, "dpm_steps": dpm_steps, "seconds_per_clip": median,
            "dpm_over_ddim": median["dpm++2m"] / median["ddim"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="t2v pipeline folder (default: the shipped one)")
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--dpm-steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--clips", type=int, default=4, help="clips per timed batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    pipe = TextToVideoPipeline.from_pretrained(args.checkpoint, device=pick_device(args.device))
    result = compare(pipe, args.ddim_steps, args.dpm_steps, args.guidance, args.clips, args.rounds)
    for sampler, seconds in result["seconds_per_clip"].items():
        steps = result["ddim_steps"] if sampler == "ddim" else result["dpm_steps"]
        print(f"{sampler:8s} {steps:3d} steps: {seconds:.2f} s per clip (median of {args.rounds} rounds)")
    print(f"DPM-Solver++ / DDIM time per clip: {result['dpm_over_ddim']:.2f} ({pipe.device}, "
          f"{torch.get_num_threads()} thread(s))")


if __name__ == "__main__":
    main()
