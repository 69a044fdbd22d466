"""Streaming with directed attention (docs/paper.md §10), measured: latency, long-clip quality, image-to-video.

1. latency   one prompt streamed to 64 frames, the wall time at which each frame is finished (latent decoded):
             the directed model with its KV cache, the same model recomputing its window at every step (no
             cache), and the bidirectional model (its first window of F frames sampled jointly, then the window
             recomputed for every new frame). Time to the first frame and to 16, 32, 64 frames, and the cost per
             new frame past the window. Time does not depend on the weights. The modes take turns block by block
             in one process, each on its own clock, so that a busy moment of a shared CPU hits them alike; time
             to the first frame is the median of `--latency-repeats` such rounds. The sampler is `generate`'s
             (DDIM, guidance 7.5, eta 1) with `--latency-steps` and `--steps` DDIM steps.
2. quality   32-frame clips for held-out prompts (seed 1, drawn as `evaluate` draws them): digit accuracy per
             frame index and per 8-frame window, the direction per window, the same digit in all 32 frames; for
             each continuation model (directed, bidirectional, each training seed). The caption names the first
             leg only: a digit that bounces off a wall rightly moves the other way afterwards (minimagic/data.py).
             So a window's direction is judged bounce-aware (minimagic/bounces.py): the caption's direction,
             reflected on an axis each time the generated digit's own centroid reaches that wall; in a window
             where it bounces, its net motion on that axis may go either way. Real bouncing clips score 100%
             in every window; a digit turning back in mid-canvas or sticking to a wall scores wrong.
             Directed models stream frame by frame with the cache; bidirectional ones make their first window
             jointly, then `--bidirectional-block` frames at a time. A last row scores as many real 32-frame
             test clips (seed 1, their own captions) with the same metrics: what the truth gets.
3. i2v       image-to-video with the first directed model from held-out test digits (MovingDigits test split,
             seed 1): frame 0 of a real clip is the given frame; digit accuracy of the generated frames and PSNR
             of the digit (a 28x28 crop at the centroid) against the given digit and, as a reference, against
             another test digit of the same class.
4. compiled  (not in the default parts) the time to the first frame again, with copies of both denoisers
             compiled (`pipe.compile()`, minimagic/compilation.py) taking turns with the eager ones: compiling
             fuses per-call work, which weighs more on a one-frame pass than on an eight-frame one. The first
             frame only: streaming on compiles one graph per length of the cache. The first (one-step) round of
             each mode, compiling included, is reported apart as its warm-up. With --freeze the copies compile
             with their weights as constants (inference-only inductor freezing, compilation.frozen_weights).

    python bench/streaming.py --directed D1 D2 --bidirectional B1 B2 --out docs/results/streaming.json \
        --md docs/results/streaming.md --latency-steps 5     # CPU, 1 thread: ~10 min per 2 models
    python bench/streaming.py --quick      # tiny random models, seconds
    python bench/streaming.py --directed D --parts latency --latency-steps 50   # the bidirectional mode runs D's
                                           # weights under the bidirectional mask: time does not depend on weights
"""

import argparse
import contextlib
import copy
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from minimagic import compilation
from minimagic.bounces import direction_kept
from minimagic.data import DIRECTION_NAMES, MovingDigits, caption_for, parse_caption
from minimagic.metrics import DigitClassifier, centroid_path, psnr, video_scores
from minimagic.pipeline import TextToVideoPipeline
from minimagic.streaming import stream_pipeline
from minimagic.text import TextEncoder
from minimagic.unet import UNet2D, UNetConfig
from minimagic.vae import VAE, VAEConfig
from minimagic.video_unet import VideoUNet

WINDOW = 8  # frames per scored window (the trained clip length)
PARTS = ["latency", "quality", "i2v"]  # the default; "compiled" is asked for by name


def open_stream(pipe: TextToVideoPipeline, num_frames: int, use_cache: bool, steps: int, guidance: float, eta: float,
                options: dict | None = None):
    """The latent blocks of one prompt's stream (its text encoded now, at the call)."""
    return stream_pipeline(pipe, ["the digit three moves right"], num_frames, num_inference_steps=steps,
                           guidance_scale=guidance, eta=eta, generator=torch.Generator().manual_seed(0),
                           use_cache=use_cache, **(options or {}))


def streams_in_turns(modes: dict, num_frames: int, steps: int, guidance: float, eta: float,
                     first_block_only: bool = False, options: dict | None = None) -> dict:
    """Per mode, the seconds it has spent when each frame is finished and decoded. The modes take turns block
    by block, so a busy moment of the shared CPU hits them alike; each mode's clock runs only in its turns.
    A block's frames are decoded one by one, each timed when it is ready to show. With `first_block_only`,
    only the first frame (for a bidirectional model: its whole first window sampled, frame 0 decoded)."""
    clocks, times, streams = {}, {name: [] for name in modes}, {}
    for name, (pipe, use_cache) in modes.items():
        start = time.perf_counter()
        streams[name] = open_stream(pipe, num_frames, use_cache, steps, guidance, eta, options)
        clocks[name] = time.perf_counter() - start

    def done(name: str) -> bool:
        return bool(times[name]) and (first_block_only or len(times[name]) == num_frames)

    while not all(done(name) for name in modes):
        for name, (pipe, _) in modes.items():
            if not done(name):
                start = time.perf_counter()
                block = next(streams[name])  # (1, k, c, h, w)
                for f in range(block.shape[1]):  # a frame is shown once it is decoded, not once its block is
                    pipe.vae.decode_video(block[:, f:f + 1])
                    clocks[name] += time.perf_counter() - start
                    times[name].append(clocks[name])
                    start = time.perf_counter()
                    if first_block_only:
                        break
    return times


def latency(directed, bidirectional, lengths: list[int], steps: int, guidance: float, eta: float,
            repeats: int = 3, options: dict | None = None) -> dict:
    window, longest = directed.unet.num_frames, max(lengths)
    modes = {"directed, cache": (directed, True), "directed, no cache": (directed, False),
             "bidirectional": (bidirectional, False)}
    streams_in_turns(modes, 2, 1, guidance, eta)  # warm-up
    first = {name: [] for name in modes}
    for _ in range(repeats):
        for name, times in streams_in_turns(modes, longest, steps, guidance, eta, first_block_only=True).items():
            first[name].append(times[0])
    results = {}
    for name, times in streams_in_turns(modes, longest, steps, guidance, eta, options=options).items():
        results[name] = {"first_frame_s": round(float(torch.tensor(first[name]).median()), 3),
                         "per_new_frame_s": round((times[-1] - times[window - 1]) / (longest - window), 3),
                         **{f"frames_{n}_s": round(times[n - 1], 2) for n in lengths}}
    cache, bidir = results["directed, cache"], results["bidirectional"]
    results["ratios"] = {
        "first_frame_bidirectional_over_cache": round(bidir["first_frame_s"] / cache["first_frame_s"], 2),
        "per_new_frame_cache_over_no_cache": round(
            cache["per_new_frame_s"] / results["directed, no cache"]["per_new_frame_s"], 3)}
    return results


def first_frame_compiled(directed, bidirectional, steps: int, guidance: float, eta: float, repeats: int,
                         freeze: bool = False) -> dict:
    """Time to the first frame, eager and compiled, the four modes taking turns; the compiled ones on copies,
    with `freeze` compiled with their weights as constants (compilation.frozen_weights)."""
    compiled = {}
    for name, pipe in (("directed", directed), ("bidirectional", bidirectional)):
        compiled[name] = copy.copy(pipe)  # the same VAE and text encoder, a denoiser of its own
        compiled[name].unet = copy.deepcopy(pipe.unet)
        compiled[name].compile()
    modes = {"directed, cache": (directed, True), "bidirectional": (bidirectional, False),
             "directed, cache, compiled": (compiled["directed"], True),
             "bidirectional, compiled": (compiled["bidirectional"], False)}
    first = {name: [] for name in modes}
    with compilation.frozen_weights() if freeze else contextlib.nullcontext():  # compiling happens in the warm-up
        warm_up = streams_in_turns(modes, directed.unet.num_frames, 1, guidance, eta, first_block_only=True)
        for _ in range(repeats):
            for name, times in streams_in_turns(modes, directed.unet.num_frames, steps, guidance, eta,
                                                first_block_only=True).items():
                first[name].append(times[0])
    results = {name: {"first_frame_s": round(float(torch.tensor(first[name]).median()), 3),
                      "warm_up_s": round(warm_up[name][0], 2)} for name in modes}
    results["ratios"] = {f"first_frame_bidirectional_over_cache{suffix}": round(
        results[f"bidirectional{suffix}"]["first_frame_s"] / results[f"directed, cache{suffix}"]["first_frame_s"], 2)
        for suffix in ("", ", compiled")}
    return results


def held_out_prompts(num_clips: int, seed: int = 1) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    digits = torch.randint(10, (num_clips,), generator=generator)
    directions = torch.randint(len(DIRECTION_NAMES), (num_clips,), generator=generator)
    return [caption_for([d], [k]) for d, k in zip(digits.tolist(), directions.tolist(), strict=True)]


def generate(pipe, prompts, num_frames, steps, guidance, eta, seed, block_size=1, first_frame=None,
             options=None) -> torch.Tensor:
    """Stream clips (N, F, 1, H, W) in [-1, 1], decoded frame by frame by the VAE."""
    blocks = stream_pipeline(pipe, prompts, num_frames, first_frame, steps, guidance, eta,
                             generator=torch.Generator().manual_seed(seed), block_size=block_size,
                             **(options or {}))
    return pipe.decode(torch.cat(list(blocks), dim=1), "vae")


def quality(pipe, classifier, num_clips, num_frames, steps, guidance, eta, seed, block_size, options=None) -> dict:
    prompts = held_out_prompts(num_clips, seed)
    start = time.time()
    videos = generate(pipe, prompts, num_frames, steps, guidance, eta, seed, block_size, None, options)
    # videos: (N, F, 1, H, W)
    return {"seconds_per_clip": round((time.time() - start) / num_clips, 1),
            **clip_quality(videos, prompts, classifier)}


def real_quality(classifier, num_clips, num_frames, seed, size) -> dict:
    """The same scores for real test clips (their own captions): what the metrics give the truth."""
    data = MovingDigits("test", seed=seed, num_frames=num_frames, size=size, length=num_clips)
    items = [data[i] for i in range(num_clips)]
    videos = torch.stack([item["video"] for item in items])  # (N, F, 1, H, W)
    return clip_quality(videos, [item["caption"] for item in items], classifier)


def clip_quality(videos: torch.Tensor, prompts: list[str], classifier) -> dict:
    """Digit accuracy, bounce-aware direction per 8-frame window, same digit in all frames of clips (N, F, 1, H, W)."""
    num_clips, num_frames = videos.shape[:2]
    scores = video_scores(videos, prompts, classifier)
    truth = torch.tensor([parse_caption(prompt)[0] for prompt in prompts])  # (N, 2): digit, direction
    correct = (scores["predicted_digits"] == truth[:, :1]).float()  # (N, F)
    kept = direction_kept(videos, truth[:, 1], WINDOW).float()  # (N, F // WINDOW) bounce-aware
    windows = range(0, num_frames - WINDOW + 1, WINDOW)
    return {"clips": num_clips, "frames": num_frames,
            "digit_accuracy": round(correct.mean().item(), 4),
            "digit_accuracy_per_frame": [round(v, 3) for v in correct.mean(0).tolist()],
            "digit_accuracy_per_window": [round(correct[:, w:w + WINDOW].mean().item(), 3) for w in windows],
            "direction_accuracy_per_window": [round(v, 3) for v in kept.mean(0).tolist()],
            "direction_right_in_every_window": round(kept.min(1).values.mean().item(), 4),
            "same_digit_all_frames": round(scores["identity_consistency"], 4)}


def digit_crops(video: torch.Tensor, size: int = 28) -> torch.Tensor:
    """A (size x size) crop at the intensity centroid of each frame: (N, F, 1, H, W) -> (N, F, 1, size, size)."""
    corners = (centroid_path(video) - size / 2).round().long().clamp(0, video.shape[-1] - size)  # (N, F, 2): x, y
    crops = torch.empty(*video.shape[:3], size, size)
    for n, f in torch.cartesian_prod(torch.arange(video.shape[0]), torch.arange(video.shape[1])).tolist():
        x, y = corners[n, f].tolist()
        crops[n, f] = video[n, f, :, y:y + size, x:x + size]
    return crops


def image_to_video(pipe, classifier, num_clips, num_frames, steps, guidance, eta, seed, block_size,
                   options=None) -> dict:
    data = MovingDigits("test", seed=seed, num_frames=num_frames, size=pipe.image_size, length=4 * num_clips)
    items = [data[i] for i in range(num_clips)]
    others = {}  # another held-out digit of each class, the reference for "same handwriting"
    for i in range(num_clips, len(data)):
        others.setdefault(data[i]["digit"], data[i]["video"][:1])
    first = torch.stack([item["video"][0] for item in items])  # (N, 1, H, W)
    prompts = [item["caption"] for item in items]
    videos = generate(pipe, prompts, num_frames, steps, guidance, eta, seed, block_size, first, options)
    # videos: (N, F, 1, H, W)
    generated = digit_crops(videos[:, 1:])  # (N, F-1, 1, 28, 28)
    given = digit_crops(first[:, None]).expand_as(generated)
    other = digit_crops(torch.stack([others.get(item["digit"], item["video"][:1]) for item in items]))
    scores = video_scores(videos[:, 1:], prompts, classifier)
    return {"clips": num_clips, "frames": num_frames, "digit_accuracy": round(scores["digit_accuracy"], 4),
            "same_digit_all_frames": round(scores["identity_consistency"], 4),
            "psnr_to_given_digit_db": round(psnr(generated.flatten(0, 1), given.flatten(0, 1))[1], 2),
            "psnr_to_other_digit_same_class_db": round(
                psnr(generated.flatten(0, 1), other.expand_as(generated).flatten(0, 1))[1], 2)}


def tiny_pipelines() -> tuple[TextToVideoPipeline, TextToVideoPipeline]:
    """Random tiny directed and bidirectional pipelines (32x32 frames) for --quick."""
    text, vae = TextEncoder(), VAE(VAEConfig.preset("tiny"))
    torch.manual_seed(0)
    unet = UNet2D(UNetConfig.preset("tiny", context_dim=text.dim))
    return tuple(TextToVideoPipeline(VideoUNet.from_unet2d(unet, 4, temporal_attention=kind), vae, text,
                                     image_size=32) for kind in ("directed", "bidirectional"))


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = ["# Streaming with directed attention (bench/streaming.py)", "", f"`{meta['command']}`", "",
             f"Seed {meta['seed']} (held-out prompts, digits and noise), guidance {meta['guidance']}, DDIM eta "
             f"{meta.get('eta', 0.0)}, "
             f"{meta['threads']} CPU thread(s). Directed models stream frame by frame with the KV cache; bidirectional "
             f"ones sample their first window jointly, then {meta['bidirectional_block']} frame(s) at a time. Past the "
             "window both continue after the last "
             f"{meta.get('keep_frames') or 'F - 1'} frames when it slides (keep_frames, minimagic/streaming.py); the "
             f"finished frames are given at t = {meta.get('context_t', 'stream_context_t of each model')} "
             f"(context_t), after {meta.get('sink_frames', 'the stream_sink_frames of each model (0 if unset)')} "
             "frame sink(s) (sink_frames).",
             "",
             "Models (each checkpoint's config.json: its training command and step):", ""]
    lines += [f"- {name}: `{info['command']}`, step {info['step']}" for name, info in meta["models"].items()]
    if "latency" in results:
        lengths = [k.removeprefix("frames_").removesuffix("_s") for k in results["latency"]["bidirectional"]
                   if k.startswith("frames_")]
        lines += ["", f"## Latency (one prompt, {meta['latency_steps']} DDIM steps per frame, seconds; first frame: "
                  f"median of {meta['latency_repeats']})", "",
                  "| mode | first frame | " + " | ".join(f"{n} frames" for n in lengths) + " | per new frame |",
                  "|---|---|" + "---|" * len(lengths) + "---|"]
        for name, row in results["latency"].items():
            if name != "ratios":
                frames = " | ".join(str(v) for k, v in row.items() if k.startswith("frames_"))
                lines.append(f"| {name} | {row['first_frame_s']} | {frames} | {row['per_new_frame_s']} |")
        lines += ["", f"Ratios: `{json.dumps(results['latency']['ratios'])}`"]
    if "compiled" in results:
        frozen = ", weights frozen" if meta.get("freeze") else ""
        lines += ["", f"## Time to the first frame, eager and compiled{frozen} ({meta['latency_steps']} DDIM steps; "
                  f"median of {meta['latency_repeats']}; warm-up: the first one-step round, compiling included)", "",
                  "| mode | first frame (s) | warm-up (s) |", "|---|---|---|"]
        lines += [f"| {name} | {row['first_frame_s']} | {row['warm_up_s']} |"
                  for name, row in results["compiled"].items() if name != "ratios"]
        lines += ["", f"Ratios: `{json.dumps(results['compiled']['ratios'])}`"]
    if "quality" in results:
        lines += ["", f"## Quality of streamed clips ({meta['clips']} clips per model, {meta['steps']} DDIM steps)",
                  "", "Direction: bounce-aware (minimagic/bounces.py), the fraction of clips right in each 8-frame "
                  "window, and in all of them.", "",
                  "| model | digit acc. | per window | direction per window | direction in every window | same digit "
                  "in all frames |", "|---|---|---|---|---|---|"]
        for name, row in results["quality"].items():
            lines.append(f"| {name} | {row['digit_accuracy']} | {row['digit_accuracy_per_window']} | "
                         f"{row['direction_accuracy_per_window']} | {row['direction_right_in_every_window']} | "
                         f"{row['same_digit_all_frames']} |")
    if "image_to_video" in results:
        lines += ["", "## Image-to-video from held-out test digits", "", "| model | clips | digit acc. | same digit | "
                  "PSNR to given digit (dB) | PSNR to another digit of the class (dB) |", "|---|---|---|---|---|---|"]
        for name, row in results["image_to_video"].items():
            lines.append(f"| {name} | {row['clips']} | {row['digit_accuracy']} | {row['same_digit_all_frames']} | "
                         f"{row['psnr_to_given_digit_db']} | {row['psnr_to_other_digit_same_class_db']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--directed", nargs="*", default=[], help="directed continuation pipelines (one per seed)")
    parser.add_argument("--bidirectional", nargs="*", default=[], help="bidirectional ones, trained the same way")
    parser.add_argument("--quick", action="store_true", help="tiny random models, a few frames: checks the code")
    parser.add_argument("--parts", nargs="+", choices=[*PARTS, "compiled"], default=PARTS,
                        help="what to measure; latency and compiled without --bidirectional time the directed "
                        "weights under its mask (time does not depend on weights)")
    parser.add_argument("--freeze", action="store_true", help="compiled part: compile with the weights as "
                        "constants (inference-only inductor freezing, minimagic/compilation.py)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--latency-steps", type=int, default=10)
    parser.add_argument("--latency-repeats", type=int, default=3, help="one-frame timings per mode (median)")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps of the quality and i2v clips")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--eta", type=float, default=1.0, help="DDIM's eta (generate's default)")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--i2v-frames", type=int, default=16)
    parser.add_argument("--i2v-clips", type=int, help="image-to-video clips (default: --clips)")
    parser.add_argument("--bidirectional-block", type=int, default=4)
    parser.add_argument("--keep-frames", type=int, help="frames the window keeps when it slides (default F - 1)")
    parser.add_argument("--context-t", type=int, help="noise level t of the finished frames given (default: "
                        "each model's stream_context_t, 0 unless it was trained with context noise)")
    parser.add_argument("--sink-frames", type=int, help="first frames kept in every window (default: each "
                        "model's stream_sink_frames, 0 unless it was trained with sinks)")
    parser.add_argument("--seed", type=int, default=1, help="prompts, digits and noise (1: held out)")
    parser.add_argument("--out", help="write the results as JSON")
    parser.add_argument("--md", help="and as a Markdown table")
    args = parser.parse_args(argv)
    given = {"keep_frames": args.keep_frames, "context_t": args.context_t, "sink_frames": args.sink_frames}
    options = {name: value for name, value in given.items() if value is not None}  # stream_latents's
    torch.set_num_threads(1)
    if args.quick:
        pipes = dict(zip(["directed (tiny)", "bidirectional (tiny)"], tiny_pipelines(), strict=True))
        args.lengths, args.latency_steps, args.steps, args.clips, args.frames, args.i2v_frames = [5, 6], 1, 1, 2, 8, 3
        args.latency_repeats = 1
        args.bidirectional_block = 1
    else:
        if not args.directed:
            raise ValueError("give --directed (and --bidirectional) checkpoint folders, or --quick")
        folders = {f"{kind} {Path(path).parent.name}/{Path(path).name}": Path(path)
                   for kind, paths in (("directed", args.directed), ("bidirectional", args.bidirectional))
                   for path in paths}
        pipes = {name: TextToVideoPipeline.from_pretrained(path) for name, path in folders.items()}
    names = list(pipes)
    directed = [n for n in names if n.startswith("directed")]
    bidirectional = [n for n in names if n.startswith("bidirectional")]
    if not bidirectional and {"latency", "compiled"} & set(args.parts):  # directed weights, bidirectional mask
        timed = copy.copy(pipes[directed[0]])
        timed.unet = timed.unet.with_temporal_attention("bidirectional").eval()
        folders["bidirectional mask, directed weights"] = folders[directed[0]]
    classifier = DigitClassifier.from_pretrained()
    command = "python bench/streaming.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    models = {name: {key: json.loads((folder / "config.json").read_text()).get(key) for key in
                     ("command", "step")} for name, folder in folders.items()} if not args.quick else {
        name: {"command": "random tiny weights", "step": 0} for name in names}
    results = {"meta": {"command": command, "quick": args.quick, "models": models, "steps": args.steps,
                        "clips": args.clips,
                        "latency_steps": args.latency_steps, "latency_repeats": args.latency_repeats,
                        "guidance": args.guidance, "eta": args.eta, "seed": args.seed,
                        "bidirectional_block": args.bidirectional_block, "freeze": args.freeze, **options,
                        "threads": torch.get_num_threads()}}
    if "latency" in args.parts:
        results["latency"] = latency(pipes[directed[0]], pipes[bidirectional[0]] if bidirectional else timed,
                                     args.lengths, args.latency_steps, args.guidance, args.eta, args.latency_repeats,
                                     options)
    if "compiled" in args.parts:
        results["compiled"] = first_frame_compiled(pipes[directed[0]],
                                                   pipes[bidirectional[0]] if bidirectional else timed,
                                                   args.latency_steps, args.guidance, args.eta, args.latency_repeats,
                                                   args.freeze)
    if "quality" in args.parts:
        results["quality"] = {name: quality(pipes[name], classifier, args.clips, args.frames, args.steps,
                                            args.guidance, args.eta, args.seed,
                                            1 if name in directed else args.bidirectional_block, options)
                              for name in names}
        results["quality"]["real test clips (reference)"] = real_quality(classifier, args.clips, args.frames,
                                                                         args.seed, pipes[names[0]].image_size)
    if "i2v" in args.parts:
        results["image_to_video"] = {directed[0]: image_to_video(pipes[directed[0]], classifier,
                                                                 args.i2v_clips or args.clips, args.i2v_frames,
                                                                 args.steps, args.guidance, args.eta, args.seed, 1,
                                                                 options)}
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    if args.md:
        Path(args.md).write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
