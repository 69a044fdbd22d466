"""One training loop for every stage of minimagic (vae, t2i, t2v, videovae, interp; docs/paper.md §7).

A stage (`Stage` below, one file each in `minimagic/stages/`) says what to train: model, batches, loss,
preview, saving. This file says how: AdamW with warm-up, gradient accumulation and clipping, an EMA copy,
bf16 autocast on CUDA, a guard that skips non-finite steps (and stops the run if the weights break), a log
in the run folder (`train_state.py`); under torchrun, data parallelism (`distributed.py`).
"""

import copy
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from minimagic import allocator, compilation, distributed
from minimagic.device import pick_device, pick_precision
from minimagic.train_state import (
    claim_run_folder,
    load_train_state,
    plot_losses,
    release_run_folder,
    save_train_state,
    write_log,
)


class Stage(Protocol):
    """What `train` needs from a stage; each file of `minimagic/stages/` subclasses it once."""

    name: ClassVar[str]  # `python -m minimagic train NAME`, and the "stage" of the checkpoints it saves
    Options: ClassVar[type]  # a dataclass of the stage's own options with their defaults: its CLI flags
    defaults: ClassVar[dict] = {}  # TrainConfig values that suit the stage (steps, lr, ...)
    model: nn.Module

    def batch(self, batch_size: int, generator: torch.Generator) -> dict:
        """A training batch drawn with `generator` (the run's: resuming replays the same batches)."""

    def loss(self, model: nn.Module, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """The scalar loss; its own randomness (t, eps) comes from `generator`, which differs per torchrun rank."""

    def preview(self, model: nn.Module, path: Path, generator: torch.Generator) -> None:
        """Write a picture of what `model` does now to `path` (a PNG)."""

    def save(self, model: nn.Module, directory: Path, command: str, **info) -> None:
        """Write the checkpoint folder that `evaluate` and the pipelines load."""

    def param_groups(self, model: nn.Module, lr: float) -> list[dict]:
        """The optimizer's parameter groups: by default every trainable parameter at `lr`."""
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]

    @staticmethod
    def evaluate(directory: Path, **options) -> dict:
        """The numbers the README reports for a checkpoint of this stage."""


def option(default, help: str):
    return field(default=default, metadata={"help": help})  # a field of a stage's Options: its CLI flag's help


MAX_BATCH, MAX_LR = 1 << 16, 1e3  # larger values are typos, refused before any work


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
    compile: bool = False  # torch.compile the loss and its backward (compilation.py; off: eager)

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in (int, float) and not (type(value) in (int, float) and math.isfinite(value)):
                raise ValueError(f"{f.name} must be a finite number, got {value!r}")
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1 or self.lr <= 0:
            raise ValueError(f"steps, batch_size, grad_accum must be >= 1 and lr > 0, got {self}")
        if self.batch_size > MAX_BATCH or self.lr > MAX_LR:
            raise ValueError(f"batch_size must be at most {MAX_BATCH} and lr at most {MAX_LR:g}, got {self.batch_size} "
                             f"and {self.lr:g}")
        if min(self.log_every, self.preview_every) < 1 or min(self.checkpoint_every, self.warmup, self.grad_clip,
                                                               self.weight_decay) < 0:
            raise ValueError("log_every, preview_every must be >= 1; checkpoint_every, warmup, grad_clip, "
                             "weight_decay >= 0")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """theta_ema <- d * theta_ema + (1 - d) * theta with d = min(decay, (1 + step) / (10 + step)): the warm-up
    keeps the initial weights from lingering in the average of a short run."""
    decay = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1 - decay)


def train(stage: Stage, cfg: TrainConfig, run_dir: str | Path, save=None, resume: bool = False,
          overwrite: bool = False) -> torch.nn.Module:
    """Train `stage.model` for `cfg.steps` steps; return the weights to ship (EMA if enabled).

    `run_dir` belongs to this run (a used one needs `resume=True` to continue, or `overwrite=True`). Every
    `cfg.checkpoint_every` steps the training state goes to `run_dir/state/` and `save(model, step)`, if
    given, is called with the weights to ship; `resume=True` continues from that state exactly."""
    run_dir = Path(run_dir)
    allocator.configure()
    device, rank, _ = distributed.setup(pick_device(cfg.device), cfg.batch_size)
    if rank > 0:
        return _train(stage, cfg, run_dir, save, resume, device, rank)
    claim_run_folder(run_dir, resume, overwrite)
    try:
        return _train(stage, cfg, run_dir, save, resume, device, rank)
    finally:
        release_run_folder(run_dir)


def _train(stage: Stage, cfg: TrainConfig, run_dir: Path, save, resume: bool, device: torch.device,
           rank: int) -> torch.nn.Module:
    precision = pick_precision(cfg.precision, device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = stage.model.to(device).train()
    loss_fn = distributed.wrap(stage, model, device)  # stage.loss(model, ...), gradients synced under torchrun
    loss_fn = compilation.compiled_loss(loss_fn) if cfg.compile else loss_fn
    ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg.ema_decay else None
    optimizer = torch.optim.AdamW(stage.param_groups(model, cfg.lr), lr=cfg.lr, weight_decay=cfg.weight_decay)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    done, rows = load_train_state(run_dir, model, ema, optimizer, generator, cfg) if resume else (0, [])
    start, trained = time.time(), 0
    bar = tqdm(range(done + 1, cfg.steps + 1), desc=f"train {stage.name}", dynamic_ncols=True, disable=rank > 0)
    for step in bar:
        warmup = min(1.0, step / max(cfg.warmup, 1))  # linear learning-rate warm-up
        for group, base_lr in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base_lr * warmup
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
        if not all(torch.isfinite(p).all() for p in params):  # the last good checkpoint stays as it is
            raise ValueError(f"step {step}: the weights are no longer finite (lr {cfg.lr:g}); the run stopped")
        trained += 1
        if ema is not None:
            ema_update(ema, model, cfg.ema_decay, step)
        if step % cfg.log_every == 0 or step == cfg.steps:
            rows.append({"step": step, "loss": total, "lr": base_lrs[0] * warmup, "seconds": time.time() - start})
            bar.set_postfix(loss=f"{total:.4f}")
        if rank > 0:  # rank 0 alone previews and writes files
            continue
        if step % cfg.preview_every == 0 or step == cfg.steps:
            stage.preview((ema or model).eval(), run_dir / f"preview_{step:06d}.png", torch.Generator())
            model.train()
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            save_train_state(run_dir, step, model, ema, optimizer, generator, cfg, rows)  # one unit, log inside
            write_log(rows, run_dir)
            if save is not None:
                save((ema or model).eval(), step)
                model.train()
    if not trained and done < cfg.steps:  # e.g. fp16 overflowing at every step
        raise ValueError(f"every step from {done + 1} to {cfg.steps} was skipped (non-finite loss or gradients)")
    if rank == 0:
        write_log(rows, run_dir)
        plot_losses(rows, run_dir / "loss.png")
    return (ema or model).eval()
