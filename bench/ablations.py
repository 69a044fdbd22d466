"""MagicVideo's ablations (docs/paper.md §8) on captioned Moving MNIST: which parts of the video model matter?

Same data, same number of steps, same seeds for every variant, each trained with the real t2v stage
(`stages.TextToVideoStage`) and training loop (`train.train`):

    full           adaptor + directed temporal attention, 2D weights from the image model (t2i checkpoint)
    no-adaptor     without the frame-wise adaptor
    bidirectional  bidirectional instead of directed temporal attention
    no-temporal    no temporal attention at all
    scratch        the full architecture trained from scratch (no image-pretrained 2D weights)
    decoder-vae, decoder-videovae
                   no training: the shipped t2v checkpoint decoded frame by frame by the image VAE, or by
                   the VideoVAE (the same latents for both)

Every `--eval-every` steps (and at step 0) the EMA weights are saved to RUN/checkpoint and scored on
`--num-videos` generated clips (`evaluate.score_t2v`): FVD-MD against as many held-out real clips, the
FVD-MD network's digit/direction accuracy, the digit/direction/identity scores of `metrics.video_scores`
and the background flicker. Each run (variant, seed) keeps its own OUT_DIR/<variant>-seed<k>/results.json
and training state, so a killed run resumes where it stopped and a finished run is skipped. Run subsets of
variants or seeds in separate processes, then merge with `--report`: docs/results/ablations.json (every
number, per seed and step), ablations.md (mean +- std over seeds at the last step) and ablations.png
(FVD-MD vs step, full vs scratch). The report's first row, "real", scores held-out real clips the same way:
FVD-MD estimated from N clips has a floor well above 0 (measured: 10 at N = 48, 8 at 64, 4 at 100, 3 at 200),
so compare variants at the same N and against that row.

Measured at 1 thread (the other core busy): 0.82 s per training step (batch 8) and 1.6-1.9 s per scored clip
(25 DDIM steps, guidance 4), so one seed of everything (five trained runs of 500 steps scored at 0, 250, 500
on 64 clips, and both decoders) takes about 68 minutes. On two cores, one seed each:

    mkdir -p runs; python bench/ablations.py --seeds 0 > runs/ablations-seed0.log 2>&1 &
    python bench/ablations.py --seeds 1 > runs/ablations-seed1.log 2>&1 &
    python bench/ablations.py --report
"""

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from minimagic import checkpoint
from minimagic.data import MovingDigits
from minimagic.evaluate import score_t2v
from minimagic.fvd import fvd_md
from minimagic.metrics import DigitClassifier, background_flicker, video_scores
from minimagic.paths import CHECKPOINTS, T2I_CHECKPOINT
from minimagic.pipeline import TextToVideoPipeline
from minimagic.stages import TextToVideoStage
from minimagic.train import TrainConfig, train
from minimagic.video_classifier import VideoClassifier, prompt_accuracy

ROOT = Path(__file__).resolve().parents[1]
TRAINED = {  # variant -> TextToVideoStage options
    "full": dict(init=T2I_CHECKPOINT),
    "no-adaptor": dict(init=T2I_CHECKPOINT, use_adaptor=False),
    "bidirectional": dict(init=T2I_CHECKPOINT, temporal_attention="bidirectional"),
    "no-temporal": dict(init=T2I_CHECKPOINT, temporal_attention="none"),
    "scratch": dict(init=None),
}
DECODERS = {"decoder-vae": "vae", "decoder-videovae": "videovae"}  # variant -> pipeline decoder
VARIANTS = (*TRAINED, *DECODERS)
ROWS = ("real", *VARIANTS)  # the report's rows: real held-out clips first
METRICS = ("fvd_md", "fvd_md_digit_accuracy", "fvd_md_direction_accuracy", "digit_accuracy",
           "direction_accuracy", "identity_consistency", "background_flicker")


def write_json(path: Path, value) -> None:
    checkpoint.atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(value, indent=2) + "\n"))


def scorer(args: argparse.Namespace, seed: int):
    """score(pipe) -> the metrics of one evaluation point, on the same prompts and noise for every variant."""
    classifier, network = DigitClassifier.from_pretrained(), VideoClassifier.from_pretrained()

    def score(pipe: TextToVideoPipeline, decoder: str = "auto") -> dict:
        return score_t2v(pipe, args.num_videos, seed=args.eval_seed + seed, steps=args.ddim_steps,
                         guidance_scale=args.guidance, decoder=decoder, classifier=classifier, network=network)

    return score


def run_trained(variant: str, seed: int, args: argparse.Namespace, run_dir: Path, results: dict) -> None:
    """Train one variant, scoring (and saving) the EMA weights at step 0 and every `eval_every` steps."""
    stage = TextToVideoStage(preset=args.preset, num_clips=args.num_clips, **TRAINED[variant])
    cfg = TrainConfig(**{**stage.defaults, "steps": args.steps, "batch_size": args.batch_size, "seed": seed,
                         "checkpoint_every": args.eval_every, "preview_every": args.steps, "log_every": 25})
    score, out = scorer(args, seed), run_dir / "checkpoint"
    done = {point["step"] for point in results["points"]}

    def evaluate(model, step: int) -> None:
        start = time.time()
        stage.save(model, out, command=results["command"], step=step)
        pipe = TextToVideoPipeline(model, stage.vae, stage.text, stage.diffusion)
        results["points"].append({"step": step, **score(pipe)})
        results["points"].sort(key=lambda point: point["step"])
        write_json(run_dir / "results.json", results)
        point = results["points"][-1]
        print(f"{variant} seed {seed} step {step}/{args.steps}: FVD-MD {point['fvd_md']:.2f}, digit "
              f"{point['fvd_md_digit_accuracy']:.2f}, direction {point['fvd_md_direction_accuracy']:.2f} "
              f"({time.time() - start:.0f}s to score)", flush=True)

    resume = (run_dir / "state" / "state.json").is_file()
    if resume and (out / checkpoint.CONFIG).is_file():  # killed between saving and scoring a point
        step = checkpoint.load_meta(out).get("step")
        if step not in done and step is not None:
            evaluate(TextToVideoPipeline.from_pretrained(out).unet, step)
    elif 0 not in done:
        evaluate(stage.model, 0)
    model = train(stage, cfg, run_dir, evaluate, resume=resume)  # evaluate(ema, step) every eval_every steps
    if args.steps not in {point["step"] for point in results["points"]}:
        evaluate(model, args.steps)


def run_decoder(variant: str, seed: int, args: argparse.Namespace, run_dir: Path, results: dict) -> None:
    """Score the shipped t2v checkpoint with one decoder (no training)."""
    pipe = TextToVideoPipeline.from_pretrained(args.t2v)
    step = checkpoint.load_meta(args.t2v).get("step", 0)
    results["points"] = [{"step": step, **scorer(args, seed)(pipe, DECODERS[variant])}]
    write_json(run_dir / "results.json", results)
    print(f"{variant} seed {seed}: FVD-MD {results['points'][0]['fvd_md']:.2f}", flush=True)


@torch.no_grad()
def real_baseline(settings: dict, seed: int) -> dict:
    """The "real" row: held-out real clips scored as if generated, against the real clips of `score_t2v`.
    FVD-MD estimated from N clips is not 0 even for real clips; this is its floor at that N."""
    num_videos, eval_seed = settings["num_videos"], settings["eval_seed"] + seed
    reference, data = (MovingDigits("test", length=num_videos, seed=s) for s in (eval_seed, eval_seed + 500))
    real = torch.stack([reference[i]["video"] for i in range(num_videos)])  # (N, F, 1, H, W)
    items = [data[i] for i in range(num_videos)]
    videos, prompts = torch.stack([item["video"] for item in items]), [item["caption"] for item in items]
    network = VideoClassifier.from_pretrained()
    scores = {k: float(v) for k, v in video_scores(videos, prompts, DigitClassifier.from_pretrained()).items()
              if not torch.is_tensor(v) or v.ndim == 0}
    accuracy = {f"fvd_md_{k}": v for k, v in prompt_accuracy(videos, prompts, network).items()}
    point = {"step": 0, "videos": num_videos, "fvd_md": fvd_md(real, videos, network), **accuracy, **scores,
             "background_flicker": background_flicker(videos)}
    return {"variant": "real", "seed": seed, "settings": settings, "points": [point], "done": True}


def run(variant: str, seed: int, args: argparse.Namespace) -> dict:
    run_dir = args.out_dir / f"{variant}-seed{seed}"
    settings = {key: getattr(args, key) for key in ("steps", "eval_every", "num_videos", "batch_size",
                                                    "ddim_steps", "guidance", "eval_seed", "preset", "num_clips")}
    path = run_dir / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if results.get("settings") != settings:  # a new run, or one made with other settings: start over
        results = {"variant": variant, "seed": seed, "settings": settings, "points": [], "done": False}
        if run_dir.exists():
            for stale in (run_dir / "state" / "state.json", path):
                stale.unlink(missing_ok=True)
    if results["done"]:
        print(f"{variant} seed {seed}: done already, skipped", flush=True)
        return results
    results["command"] = shlex.join(["python", "bench/ablations.py", *args.argv])
    start = time.time()
    (run_trained if variant in TRAINED else run_decoder)(variant, seed, args, run_dir, results)
    results.update(done=True, minutes=round((time.time() - start) / 60, 2))
    write_json(path, results)
    return results


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3g} ± {spread:.2g}"


def report(out_dir: Path, results_dir: Path) -> dict:
    """Merge every OUT_DIR/*/results.json into ablations.json, .md and .png under `results_dir`."""
    runs = [json.loads(path.read_text()) for path in sorted(out_dir.glob("*/results.json"))]
    if runs:  # the floor of every metric at this number of clips, for the seeds that were run
        runs += [real_baseline(runs[0]["settings"], seed) for seed in sorted({r["seed"] for r in runs})]
    runs.sort(key=lambda r: (ROWS.index(r["variant"]) if r["variant"] in ROWS else 99, r["seed"]))
    merged = {"runs": runs, "metrics": list(METRICS)}
    results_dir.mkdir(parents=True, exist_ok=True)
    write_json(results_dir / "ablations.json", merged)
    lines = ["| variant | seeds | step | " + " | ".join(METRICS) + " |", "|---" * (3 + len(METRICS)) + "|"]
    for variant in ROWS:
        finals = [r["points"][-1] for r in runs if r["variant"] == variant and r["points"]]
        if finals:
            seeds = ", ".join(str(r["seed"]) for r in runs if r["variant"] == variant and r["points"])
            steps = sorted({point["step"] for point in finals})
            cells = [mean_std([point[m] for point in finals]) for m in METRICS]
            lines.append(f"| {variant} | {seeds} | {'/'.join(map(str, steps))} | " + " | ".join(cells) + " |")
    settings = runs[0]["settings"] if runs else {}
    note = (f"\nMean ± std over seeds at each run's last evaluated step; {settings.get('num_videos')} clips per "
            f"point, {settings.get('ddim_steps')} DDIM steps, guidance {settings.get('guidance')}. Settings: "
            f"`{json.dumps(settings)}`.\n")
    (results_dir / "ablations.md").write_text("\n".join(lines) + "\n" + note)
    plot_curves(runs, results_dir / "ablations.png")
    print("\n".join(lines))
    return merged


def plot_curves(runs: list[dict], path: Path) -> None:
    """FVD-MD vs training step: the image-pretrained full model vs the one trained from scratch."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2), tight_layout=True)
    ax = fig.add_subplot()
    for variant, colour in (("full", "tab:blue"), ("scratch", "tab:orange")):
        curves = [r["points"] for r in runs if r["variant"] == variant and r["points"]]
        for index, points in enumerate(curves):
            ax.plot([p["step"] for p in points], [p["fvd_md"] for p in points], color=colour, marker="o",
                    markersize=3, alpha=0.8, label=variant if index == 0 else None)
    ax.set(xlabel="training step", ylabel="FVD-MD (lower is better)", yscale="log",
           title="image-pretrained vs from-scratch")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=500, help="training steps of every trained variant")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--num-videos", type=int, default=64, help="generated (and real) clips per point")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--ddim-steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--eval-seed", type=int, default=1000, help="prompts and noise: eval_seed + seed")
    parser.add_argument("--preset", default="toy", help="U-Net preset of the from-scratch variant")
    parser.add_argument("--num-clips", type=int, default=6000, help="training clips (encoded once, cached)")
    parser.add_argument("--t2v", type=Path, default=CHECKPOINTS / "t2v-moving-digits", help="for decoder-*")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "ablations")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", action="store_true", help="only merge the results into the report")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    args.argv = sys.argv[1:] if argv is None else argv
    torch.set_num_threads(args.threads)
    if not args.report:
        for variant in args.variants:
            for seed in args.seeds:
                print(f"== {variant} seed {seed}", flush=True)
                run(variant, seed, args)
    return report(args.out_dir, args.results_dir)


if __name__ == "__main__":
    main()
