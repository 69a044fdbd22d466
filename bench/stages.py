"""Every stage's step at steady state, with each speed lever off and on, against the machine's matmul peak.

    PYTHONPATH=. python bench/stages.py --out docs/stages.json --md docs/efficiency.md   # every stage: hours,
                                               # mostly compiling (2-22 min a stage on a loaded 2-core machine)
    PYTHONPATH=. python bench/stages.py --stages t2v,interp --levers eager,channels_last  # a part, no compiling
    PYTHONPATH=. python bench/stages.py --quick            # tiny configs, one process, no compiling: seconds
    PYTHONPATH=. python bench/stages.py --chain a.json b.json --md docs/efficiency.md    # parts merged; the chain

Stages: latent encoding (64 Moving-digit clips per step through the shipped VAE, as `encode_clips` does), the
training step of vae, t2i, t2v, videovae, interp, continuation (and any later stage in `STAGES`) at its recipe's
batch size (`stage.batch`, `stage.loss`, backward, clipping, AdamW and the EMA, as train.py does), and the
sampler's denoiser (one classifier-free-guided call of the shipped t2v U-Net, as `generate` makes 25 of).
Levers, each measured against eager mode with the others at their defaults:

- allocator: minimagic/allocator.py. It is set once per process, so each stage runs in two worker processes,
  allocator on and off, one after the other in alternating order;
- compile: minimagic/compilation.py (inductor, static shapes). The first steps compile: their excess over the
  steady-state step is reported as the compile time, apart from the steady-state rate;
- channels-last: weights and inputs in torch.channels_last memory format;
- bf16: the forward (and the loss) under torch.autocast with bfloat16 on the CPU, as `train STAGE --precision
  bf16` runs it; CPUs with AVX512-BF16 or AMX multiply bfloat16 matrices faster than fp32 ones.

Inside the allocator-on worker, eager, compiled, channels-last and bf16 copies of the model take turns step by step
(in reversed order every other round), so load from other processes hits them alike. FLOPs per step are
counted by torch.utils.flop_counter on one eager step (matmuls, convolutions, attention; not the
elementwise work). The fp32 matmul peak is measured with the same threads at the start and the end of the
run; the machine's load average is recorded with every worker.
"""

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import efficiency  # noqa: E402  (registers the CPU attention kernels' FLOP formulas)
from doc_section import write_section  # noqa: E402

from minimagic import allocator, compilation  # noqa: E402
from minimagic.distributed import StageLoss  # noqa: E402
from minimagic.train import ema_update  # noqa: E402

LEVERS = ("eager", "compile", "channels_last", "bf16")
QUICK_LEVERS = ("eager", "channels_last", "bf16")  # --quick: compiling takes minutes (tests/test_compile.py checks it)
RECIPES = {  # the shipped checkpoints' recorded runs (docs/training.md): steps and batch size of each stage
    "vae": (800, 32), "t2i": (4000, 32), "t2v": (9250, 8), "videovae": (3500, 4), "interp": (13500, 8),
}
CHAIN_CLIPS = 6000  # clips the first diffusion stage encodes (t2i, t2v and videovae share the cache)
ENCODE_BATCH = 64  # clips per encoding step, encode_clips's batch
BEGIN, END = "<!-- bench/stages.py: begin -->", "<!-- bench/stages.py: end -->"  # its part of docs/efficiency.md


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def matmul_peak(threads: int, size: int = 1024, repeats: int = 10) -> float:
    """GFLOP/s of the best of `repeats` fp32 (size x size) @ (size x size) products on `threads` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(timed(lambda: a @ b) for _ in range(repeats))
    torch.set_num_threads(previous)
    return 2 * size**3 / best / 1e9


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ----------------------------------------------------------------------------------------------- the stages
def build(name: str, quick: bool):
    """(what a step runs on, steps of work per call, the unit) for the stage `name`; see `make_step`."""
    from minimagic.stages import get_stage

    small = {"num_clips": 4} if quick else {"num_clips": 64}  # the step does not depend on the clips' number
    options = {
        "vae": {"preset": "tiny"} if quick else {},
        "t2i": {"preset": "tiny", **small} if quick else small,
        "t2v": {"preset": "tiny", "init": None, **small} if quick else small,
        "videovae": small,
        "interp": {"preset": "tiny", "init": None} if quick else {},
        "continuation": small,
    }.get(name, {})
    Stage = get_stage(name)
    batch_size = 1 if quick else RECIPES.get(name, (0, Stage.defaults.get("batch_size", 32)))[1]
    return Stage(**options), batch_size


def training_step(stage, batch_size: int, lever: str, ema_decay: float):
    """One training step of a fresh copy of the stage's model with `lever` on, as train.py runs it."""
    torch.manual_seed(0)
    model = copy.deepcopy(stage.model).train()
    if lever == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    loss_fn = StageLoss(stage, model)
    loss_fn = compilation.compiled_loss(loss_fn) if lever == "compile" else loss_fn
    optimizer = torch.optim.AdamW(stage.param_groups(model, 1e-4), lr=1e-4)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    ema = copy.deepcopy(model).eval().requires_grad_(False) if ema_decay else None
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        batch = stage.batch(batch_size, generator)
        if lever == "channels_last":
            batch = {k: to_channels_last(v) for k, v in batch.items()}
        with autocast(lever):
            loss = loss_fn(batch, generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema_update(ema, model, ema_decay, 1000)

    return step


def autocast(lever: str):
    """bfloat16 autocast on the CPU for the bf16 lever, else nothing."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=lever == "bf16")


def to_channels_last(value):
    if torch.is_tensor(value) and value.ndim == 4:
        return value.contiguous(memory_format=torch.channels_last)
    return value


def encoding_step(vae, clips, batch_size: int, lever: str):
    """Encode `batch_size` clips (drawn afresh, as encode_clips does) with a copy of `vae`."""
    vae = copy.deepcopy(vae).eval()
    if lever == "channels_last":
        vae = vae.to(memory_format=torch.channels_last)
    if lever == "compile":
        compilation.compile_in_place(vae.encoder)
    index = iter(range(10**9))

    @torch.no_grad()
    def step() -> None:
        video = torch.stack([clips[next(index)]["video"] for _ in range(batch_size)])  # (B, F, C, H, W)
        with autocast(lever):
            vae.encode_video(video)

    return step


def sampling_step(pipe, lever: str):
    """One guided call of the t2v denoiser (batch 2: the prompt and the empty one) on a fresh noisy latent."""
    from minimagic.guidance import classifier_free_guidance

    unet = copy.deepcopy(pipe.unet).eval()
    if lever == "channels_last":
        unet = unet.to(memory_format=torch.channels_last)
    if lever == "compile":
        compilation.compile_in_place(unet)
    context, _ = pipe.text_encoder.encode(["the digit seven moves left"])  # (1, L, D)
    uncond, _ = pipe.text_encoder.uncond(1)
    shape = (1, unet.num_frames, *pipe.latent_size)
    fps = torch.full((1,), 8.0)

    @torch.no_grad()
    def step() -> None:
        with autocast(lever):
            classifier_free_guidance(unet, torch.randn(shape), torch.tensor([500]), context, uncond, 4.0, fps=fps)

    return step


def make_steps(name: str, quick: bool, levers: tuple[str, ...]) -> tuple[dict, int, str]:
    """{lever: step function} for stage `name`, the items of work per step, and their unit."""
    if name == "encode":
        from minimagic.data import MovingDigits
        from minimagic.paths import VAE_CHECKPOINT
        from minimagic.vae import VAE

        batch, clips = 1 if quick else ENCODE_BATCH, MovingDigits("train", length=10**9)
        vae = VAE.from_pretrained(VAE_CHECKPOINT)
        return {lever: encoding_step(vae, clips, batch, lever) for lever in levers}, batch, "clips"
    if name == "sample":
        from minimagic.pipeline import TextToVideoPipeline

        pipe = TextToVideoPipeline.from_pretrained()
        return {lever: sampling_step(pipe, lever) for lever in levers}, 1, "denoiser calls"
    stage, batch_size = build(name, quick)
    ema_decay = stage.defaults.get("ema_decay", 0.0)
    return {lever: training_step(stage, batch_size, lever, ema_decay) for lever in levers}, batch_size, "steps"


def measure(name: str, quick: bool, levers: tuple[str, ...], warmup: int, rounds: int) -> dict:
    """Steady-state seconds per step of every lever, taking turns; compile time; FLOPs; the top ops."""
    steps, items, unit = make_steps(name, quick, levers)
    first = {lever: [timed(step) for _ in range(warmup)] for lever, step in steps.items()}
    seconds = {lever: [] for lever in steps}
    for round_index in range(rounds):
        for lever in levers if round_index % 2 == 0 else levers[::-1]:
            seconds[lever].append(timed(steps[lever]))
    with FlopCounterMode(display=False) as counter:
        steps["eager"]()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        steps["eager"]()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_us = sum(e.self_cpu_time_total for e in events)
    gflop = counter.get_total_flops() / 1e9
    result = {"stage": name, "items_per_step": items, "unit": unit, "gflop_per_step": gflop,
              "threads": torch.get_num_threads(), "allocator": bool(allocator.applied), "load_average": load_average(),
              "top_ops": [{"op": e.key, "share": e.self_cpu_time_total / total_us} for e in events[:8]]}
    for lever in levers:
        step_s = statistics.median(seconds[lever])
        result[lever] = {"step_s": step_s, "steps_per_s": 1 / step_s, "gflop_per_s": gflop / step_s,
                         "compile_s": max(0.0, sum(first[lever]) - warmup * step_s)}
    return result


# ----------------------------------------------------------------------------------------------- one run
def stage_names(quick: bool) -> list[str]:
    from minimagic.stages import STAGES

    return ["encode", *STAGES, *([] if quick else ["sample"])]


def worker(name: str, allocator_on: bool, threads: int, quick: bool, warmup: int, rounds: int,
           levers: tuple[str, ...] = LEVERS) -> dict:
    """`measure` in a fresh process: the allocator setting is per process."""
    levers = ",".join(levers if allocator_on else ("eager",))
    env = {**os.environ, "MINIMAGIC_ALLOCATOR": "1" if allocator_on else "0", "OMP_NUM_THREADS": str(threads),
           "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="inductor-")}  # cold: the compile time is all there
    command = [sys.executable, __file__, "--worker", name, "--levers", levers, "--warmup", str(warmup),
               "--rounds", str(rounds), *(["--quick"] if quick else [])]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    shutil.rmtree(env["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
    if result.returncode:
        raise RuntimeError(f"stage {name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(names: list[str], threads: int, quick: bool, warmup: int, rounds: int, out: Path | None = None,
        levers: tuple[str, ...] = LEVERS) -> dict:
    """Measure the stages `names`; with `out`, the results are merged into that JSON file after every stage
    (the stages it already holds and were not measured again are kept), so that a run can go in parts."""
    results = json.loads(out.read_text()) if out is not None and out.is_file() else {"peak": [], "stages": {}}
    results["meta"] = {"machine": efficiency.machine(torch.device("cpu")), "cpu_count": os.cpu_count(),
                       "torch": torch.__version__, "threads": threads, "quick": quick, "warmup": warmup,
                       "rounds": rounds, "compile_backend": compilation.BACKEND}
    results["peak"] += [{"threads": n, "gflop_per_s": matmul_peak(n), "load_average": load_average()}
                        for n in sorted({1, 2, threads})]
    for index, name in enumerate(names):
        order = (True, False) if index % 2 == 0 else (False, True)
        if quick:  # one process: the allocator lever is not measured, nor compile
            allocator.configure()
            torch.set_num_threads(threads)
            row = {"on": measure(name, True, QUICK_LEVERS, warmup, rounds), "off": None}
        else:
            try:
                runs = {on: worker(name, on, threads, quick, warmup, rounds, levers) for on in order}
            except RuntimeError as error:  # reported, and the other stages still run
                print(error, file=sys.stderr, flush=True)
                continue
            row = {"on": runs[True], "off": runs[False]}
        results["stages"][name] = row
        print(summary(name, row), flush=True)
        if out is not None:
            out.write_text(json.dumps(results, indent=1) + "\n")
    results["peak"] += [{"threads": n, "gflop_per_s": matmul_peak(n), "load_average": load_average()}
                        for n in sorted({1, 2, threads})]
    return results


def ratios(row: dict) -> dict:
    """Speed-ups (steady state) of each lever over eager with the allocator on; allocator: on over off."""
    on, off = row["on"], row["off"]
    out = {lever: on[lever]["steps_per_s"] / on["eager"]["steps_per_s"] if lever in on else None
           for lever in LEVERS[1:]}
    out["allocator"] = on["eager"]["steps_per_s"] / off["eager"]["steps_per_s"] if off else None
    return out


def summary(name: str, row: dict) -> str:
    on, r = row["on"], ratios(row)
    text = " ".join(f"{k} {v:.2f}x" for k, v in r.items() if v is not None)
    return (f"{name}: {on['eager']['steps_per_s']:.3f} steps/s eager, {on['eager']['gflop_per_s']:.1f} GFLOP/s; "
            f"{text}; compile time {on.get('compile', {}).get('compile_s', 0):.0f} s; load {on['load_average']:.1f}")


# ----------------------------------------------------------------------------------------------- the chain
def chain(results: dict, gpu_tflops: float, gpu_step_ms: float) -> dict:
    """The toy chain's hours from the measured rates x the recorded steps (RECIPES) + encoding CHAIN_CLIPS clips:
    before (eager, allocator off), with the defaults (allocator on), and with every lever that is faster
    (compile time included). The GPU time is estimated, step by step, as the longer of the FLOPs at an assumed
    sustained rate and an assumed fixed cost per step (kernel launches and Python: toy models are small)."""
    stages = results["stages"]
    parts = {"encode": (CHAIN_CLIPS / stages["encode"]["on"]["items_per_step"], stages["encode"])}
    parts |= {name: (steps, stages[name]) for name, (steps, _) in RECIPES.items() if name in stages}
    missing = [name for name in ("encode", *RECIPES) if name not in parts]
    if missing:
        raise ValueError(f"the results lack the stages {missing}: run bench/stages.py on every stage first")
    rows, totals, flops, gpu_s = {}, {"before": 0.0, "defaults": 0.0, "best": 0.0}, 0.0, 0.0
    for name, (steps, row) in parts.items():
        on, off = row["on"], row["off"] or row["on"]
        levers = [lever for lever in LEVERS if lever in on]
        best = min(levers, key=lambda lever: steps * on[lever]["step_s"] + on[lever]["compile_s"])
        hours = {"before": steps * off["eager"]["step_s"] / 3600, "defaults": steps * on["eager"]["step_s"] / 3600,
                 "best": (steps * on[best]["step_s"] + on[best]["compile_s"]) / 3600}
        rows[name] = {"steps": steps, "best_lever": best, **hours}
        totals = {k: totals[k] + hours[k] for k in totals}
        flops += steps * on["gflop_per_step"] * 1e9
        gpu_s += steps * max(on["gflop_per_step"] / (gpu_tflops * 1e3), gpu_step_ms / 1e3)
    return {"stages": rows, "hours": totals, "defaults_over_before": totals["defaults"] / totals["before"],
            "best_over_before": totals["best"] / totals["before"], "pflop": flops / 1e15,
            "gpu_tflops_assumed": gpu_tflops, "gpu_step_ms_assumed": gpu_step_ms, "gpu_minutes_estimate": gpu_s / 60}


# ----------------------------------------------------------------------------------------------- report
def per_step(row: dict) -> str:
    items, unit = row["items_per_step"], row["unit"]
    return f"batch {items}" if unit == "steps" else f"{items} {unit.removesuffix('s') if items == 1 else unit}"


def markdown(results: dict, chain_result: dict | None) -> str:
    threads = results["meta"]["threads"]
    peak = max(p["gflop_per_s"] for p in results["peak"] if p["threads"] == threads)
    two = max((p["gflop_per_s"] for p in results["peak"] if p["threads"] == 2), default=None)
    lines = [f"fp32 matmul peak ({threads} thread{'s' * (threads > 1)}, the best of its measurements before and "
             f"after each part of the run): **{peak:.1f} GFLOP/s**"
             + (f"; 2 threads: {two:.1f} GFLOP/s" if two and threads != 2 else "") + ".", "",
             "| stage | per step | GFLOP per step | eager steps/s | GFLOP/s | of peak | allocator on/off | compile | "
             "channels-last | bf16 | compile time | load |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in results["stages"].items():
        on, r = row["on"], {k: "-" if v is None else f"{v:.2f}x" for k, v in ratios(row).items()}
        compile_s = f"{on['compile']['compile_s']:.0f} s" if "compile" in on else "-"
        lines.append(
            f"| {name} | {per_step(on)} | {on['gflop_per_step']:.1f} | "
            f"{on['eager']['steps_per_s']:.3f} | {on['eager']['gflop_per_s']:.1f} | "
            f"{on['eager']['gflop_per_s'] / peak:.0%} | {r['allocator']} | {r['compile']} | "
            f"{r['channels_last']} | {r['bf16']} | {compile_s} | {on['load_average']:.1f} |")
    slowest = min(results["stages"], key=lambda n: results["stages"][n]["on"]["eager"]["gflop_per_s"])
    ops = ", ".join(f"{o['op']} {o['share']:.0%}" for o in results["stages"][slowest]["on"]["top_ops"])
    lines += ["", f"Self CPU time of one eager step of the slowest stage ({slowest}): {ops}."]
    if chain_result is not None:
        c = chain_result
        lines += ["", "| chain part | steps | before (h) | defaults (h) | best lever | with it (h) |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {name} | {r['steps']:,.0f} | {r['before']:.2f} | {r['defaults']:.2f} | {r['best_lever']} | "
                  f"{r['best']:.2f} |" for name, r in c["stages"].items()]
        h = c["hours"]
        lines += [f"| **total** | | **{h['before']:.2f}** | **{h['defaults']:.2f}** "
                  f"({c['defaults_over_before']:.0%}) | | **{h['best']:.2f}** ({c['best_over_before']:.0%}) |", "",
                  f"{c['pflop']:.2f} PFLOP in all. One GPU, assuming a sustained {c['gpu_tflops_assumed']:g} TFLOP/s "
                  f"and at least {c['gpu_step_ms_assumed']:g} ms per step: about {c['gpu_minutes_estimate']:.0f} min "
                  "(an estimate, not a measurement)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny configs, one process, a step or two")
    parser.add_argument("--stages", help="comma-separated subset of: encode, the STAGES, sample (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, help="first steps per lever, not timed as steady state (3)")
    parser.add_argument("--rounds", type=int, help="timed steps per lever (6)")
    parser.add_argument("--out", type=Path, help="write the results (and the chain) as JSON, merged into the file's")
    parser.add_argument("--md", type=Path, help="write the tables into this Markdown file (between its markers)")
    parser.add_argument("--chain", type=Path, nargs="+", help="compute the chain's time from these JSON files "
                        "(runs of parts of the stages, merged) instead of measuring")
    parser.add_argument("--gpu-tflops", type=float, default=20.0, help="assumed sustained GPU rate (TFLOP/s)")
    parser.add_argument("--gpu-step-ms", type=float, default=30.0, help="assumed least GPU time per step (ms)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--levers", default=",".join(LEVERS), help="eager and the levers to measure against it "
                        "(default: all; the allocator is always measured)")
    args = parser.parse_args(argv)
    warmup = args.warmup or (1 if args.quick else 3)
    rounds = args.rounds or (1 if args.quick else 6)
    if min(warmup, rounds, args.threads) < 1 or not (args.gpu_tflops > 0 and args.gpu_step_ms >= 0):
        raise ValueError("--warmup, --rounds and --threads must be >= 1, --gpu-tflops > 0, --gpu-step-ms >= 0")
    if args.worker:
        allocator.configure()
        print(json.dumps(measure(args.worker, args.quick, tuple(args.levers.split(",")), warmup, rounds)))
        return {}
    if args.chain:
        missing = [str(path) for path in args.chain if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"no results at {', '.join(missing)}: run bench/stages.py --out FILE first")
        parts = [json.loads(path.read_text()) for path in args.chain]
        results = {"meta": parts[0]["meta"], "peak": [p for part in parts for p in part["peak"]],
                   "stages": {name: row for part in parts for name, row in part["stages"].items()}}
    else:
        known = stage_names(args.quick)
        names = args.stages.split(",") if args.stages else known
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"unknown stages {unknown}; choose from {', '.join(known)}")
        levers = tuple(args.levers.split(","))
        if levers[0] != "eager" or not set(levers) <= set(LEVERS):
            raise ValueError(f"--levers must start with eager and name some of {', '.join(LEVERS)}")
        results = run(names, args.threads, args.quick, warmup, rounds, args.out, levers)
    if not args.quick and all(name in results["stages"] for name in ("encode", *RECIPES)):
        results["chain"] = chain(results, args.gpu_tflops, args.gpu_step_ms)
    text = markdown(results, results.get("chain"))
    print(text)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    if args.md:
        write_section(args.md, f"{BEGIN}\n{text}{END}", BEGIN, END)
    return results


if __name__ == "__main__":
    main()
