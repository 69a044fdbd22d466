"""One training loop for every stage of minimagic (vae, t2i, t2v, videovae, ...).

A stage (see `stages.py`) says what to train: its `model`, how to draw a `batch`, its `loss`, a
`preview` picture and how to `save` the result. This file says how: AdamW with warm-up, gradient
accumulation and clipping, an EMA copy of the weights, bf16 autocast on CUDA with a guard that skips
non-finite steps, a tqdm bar, a CSV log and a loss-curve PNG in the run folder; under torchrun, data
parallelism with DistributedDataParallel (`distributed.py`).
"""

import copy
import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from minimagic import distributed
from minimagic.train_state import load_train_state, save_train_state


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 100  # linear learning-rate warm-up steps
    grad_accum: int = 1  # micro-batches per optimizer step
    grad_clip: float = 1.0  # max global gradient norm (0 disables clipping)
    ema_decay: float = 0.0  # 0 disables the EMA copy (diffusion stages use ~0.999)
    log_every: int = 25
    preview_every: int = 500
    checkpoint_every: int = 0  # also save the weights every N steps (0: only at the end)
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # "fp32", "bf16" or "fp16"; auto = bf16 on CUDA, fp32 elsewhere

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1 or self.lr <= 0:
            raise ValueError(f"steps, batch_size, grad_accum must be >= 1 and lr > 0, got {self}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


def pick_device(name: str = "auto") -> torch.device:
    """The one place that chooses the device: cuda, then mps, then cpu (or the name given)."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """theta_ema <- d * theta_ema + (1 - d) * theta with d = min(decay, (1 + step) / (10 + step)): the warm-up
    keeps the initial weights from lingering in the average of a short run."""
    decay = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1 - decay)


def plot_losses(rows: list[dict], path: Path) -> None:
    """The loss curve as a PNG, drawn without pyplot so a notebook's plotting backend is left alone."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3), tight_layout=True)
    ax = fig.add_subplot()
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows])
    ax.set(xlabel="step", ylabel="loss", yscale="log", title=path.parent.name)
    fig.savefig(path)


def write_log(rows: list[dict], run_dir: Path) -> None:
    with open(run_dir / "log.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["step", "loss", "lr", "seconds"])
        writer.writeheader()
        writer.writerows(rows)


def read_log(run_dir: Path, up_to: int) -> list[dict]:
    if not (run_dir / "log.csv").is_file():
        return []
    with open(run_dir / "log.csv", newline="") as file:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(file)]
    return [row for row in rows if row["step"] <= up_to]


def train(stage, cfg: TrainConfig, run_dir: str | Path, save=None, resume: bool = False) -> torch.nn.Module:
    """Train `stage.model` for `cfg.steps` steps; return the weights to ship (EMA if enabled).

    Every `cfg.checkpoint_every` steps the full training state goes to `run_dir/state/` and `save(model,
    step)`, if given, is called with the weights to ship. `resume=True` continues from that state exactly."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device, rank, _ = distributed.setup(pick_device(cfg.device), cfg.batch_size)
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = stage.model.to(device).train()
    loss_fn = distributed.wrap(stage, model, device)  # stage.loss(model, ...), gradients synced under torchrun
    ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg.ema_decay else None
    params = [p for p in model.parameters() if p.requires_grad]
    groups = stage.param_groups(model, cfg.lr) if hasattr(stage, "param_groups") else [{"params": params}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    done = load_train_state(run_dir, model, ema, optimizer, generator, cfg) if resume else 0
    rows, start = read_log(run_dir, done), time.time()
    bar = tqdm(range(done + 1, cfg.steps + 1), desc=f"train {stage.name}", dynamic_ncols=True, disable=rank > 0)
    for step in bar:
        for group, base_lr in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base_lr * min(1.0, step / max(cfg.warmup, 1))  # linear warm-up
        total = 0.0
        for micro_batch in range(cfg.grad_accum):
            batch = distributed.shard(stage.batch(cfg.batch_size, generator))  # this rank's part of the batch
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                noise = distributed.loss_generator(generator, step, micro_batch)  # per rank under torchrun
                loss = loss_fn(batch, noise) / cfg.grad_accum
            scaler.scale(loss).backward()
            total += loss.item()
        total = distributed.mean(total, device)  # the global batch's loss
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip else math.inf)
        if not (math.isfinite(total) and torch.isfinite(norm)):
            tqdm.write(f"step {step}: non-finite loss {total} or gradient norm {norm.item()}; step skipped")
            optimizer.zero_grad(set_to_none=True)
            scaler.update()
            continue
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema_update(ema, model, cfg.ema_decay, step)
        if step % cfg.log_every == 0 or step == cfg.steps:
            rows.append({"step": step, "loss": total, "lr": base_lrs[0] * min(1.0, step / max(cfg.warmup, 1)),
                         "seconds": time.time() - start})
            bar.set_postfix(loss=f"{total:.4f}")
        if rank > 0:  # rank 0 alone previews and writes files
            continue
        if step % cfg.preview_every == 0 or step == cfg.steps:
            stage.preview((ema or model).eval(), run_dir / f"preview_{step:06d}.png", torch.Generator())
            model.train()
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            write_log(rows, run_dir)  # first: a kill between the two leaves extra log rows, which resume drops
            save_train_state(run_dir, step, model, ema, optimizer, generator, cfg)
            if save is not None:
                save((ema or model).eval(), step)
                model.train()
    if rank == 0:
        write_log(rows, run_dir)
        plot_losses(rows, run_dir / "loss.png")
    return (ema or model).eval()
