"""A run folder and its exact resume: everything a training run needs to continue as if never stopped.

`RUN_DIR` belongs to one run: a lock keeps a second process out, and a new run into a used folder is
refused unless it resumes (or overwrites). `RUN_DIR/state/` holds the weights, the EMA weights, the
optimizer's moments (safetensors), and the step, the random-number states, the training config and the loss
log (JSON), written as one unit: a kill at any moment leaves the previous state or the new one, never a mix.
The data position needs nothing more: every batch is drawn from the run's seeded generator, whose state is
saved. Nothing is ever unpickled.
"""

import csv
import io
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

import minimagic
from minimagic import checkpoint

STATE_DIR, STATE_JSON, LOG = "state", "state.json", "log.csv"
RUN_FILES = (STATE_DIR, LOG, "loss.png")  # what makes a folder a used run folder
_LOCKS: dict[Path, list[int]] = {}  # run folder -> [lock file descriptor, claims] held by this process


def claim_run_folder(run_dir: Path, resume: bool, overwrite: bool = False) -> None:
    """Make `run_dir` this process's run folder: lock it, and refuse a used one unless resuming or overwriting."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run folder {run_dir} is a file")
    if resume and not run_dir.is_dir():
        raise FileNotFoundError(f"nothing to resume: no run folder {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir.resolve()
    if key in _LOCKS:
        _LOCKS[key][1] += 1
    else:
        fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl  # POSIX; elsewhere runs go unlocked

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:
            pass
        except BlockingIOError:
            os.close(fd)
            raise ValueError(f"run folder {run_dir} is in use by another training process") from None
        _LOCKS[key] = [fd, 1]
    checkpoint.recover(run_dir / STATE_DIR)
    checkpoint.remove_leftovers(run_dir)
    used = [name for name in RUN_FILES if (run_dir / name).exists()]
    if used and not resume and not overwrite:
        release_run_folder(run_dir)
        raise ValueError(f"run folder {run_dir} holds another run ({', '.join(used)}): --resume it, choose another "
                         "--run-dir, or --overwrite")
    if overwrite and not resume:
        for name in used:
            checkpoint.remove(run_dir / name)
        for preview in run_dir.glob("preview_*.png"):
            preview.unlink()


def release_run_folder(run_dir: Path) -> None:
    """Undo one `claim_run_folder`; the last one unlocks the folder."""
    key = Path(run_dir).resolve()
    if key in _LOCKS:
        _LOCKS[key][1] -= 1
        if _LOCKS[key][1] == 0:
            os.close(_LOCKS.pop(key)[0])  # closing the file releases its lock


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """AdamW's state as flat tensors ("p.<index>.<name>") plus its JSON-able param groups."""
    state = optimizer.state_dict()
    tensors = {f"p.{index}.{name}": value.detach().cpu().contiguous()
               for index, entry in state["state"].items() for name, value in entry.items()}
    return tensors, state["param_groups"]


def save_train_state(run_dir: Path, step: int, model: torch.nn.Module, ema: torch.nn.Module | None,
                     optimizer: torch.optim.Optimizer, generator: torch.Generator, cfg, rows: list[dict]) -> None:
    weights = {f"model.{k}": v for k, v in model.state_dict().items()}
    weights |= {f"ema.{k}": v for k, v in (ema.state_dict() if ema is not None else {}).items()}
    moments, groups = _flatten_optimizer(optimizer)
    tensors = {k: v.detach().cpu().contiguous() for k, v in {**weights, **{f"optimizer.{k}": v for k, v in
                                                                           moments.items()}}.items()}
    tensors["rng.generator"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"step": step, "config": asdict(cfg), "param_groups": groups, "log": rows,
            "minimagic_version": minimagic.__version__}

    def write(folder: Path) -> None:
        checkpoint.write_tensors(tensors, folder / "state.safetensors")
        checkpoint.write_text(folder / STATE_JSON, json.dumps(meta, indent=1))

    checkpoint.write_folder(Path(run_dir) / STATE_DIR, write, marker=STATE_JSON)


RESUMABLE_CHANGES = {"steps", "log_every", "preview_every", "checkpoint_every", "device", "compile"}  # same maths


def load_train_state(run_dir: Path, model: torch.nn.Module, ema: torch.nn.Module | None,
                     optimizer: torch.optim.Optimizer, generator: torch.Generator, cfg) -> tuple[int, list[dict]]:
    """Restore a run saved by `save_train_state`; return its step and loss log. Errors name the broken file,
    or the training options that differ from the saved run's (only steps, logging and device may change)."""
    folder = Path(run_dir) / STATE_DIR
    if not (folder / STATE_JSON).is_file():
        raise FileNotFoundError(f"nothing to resume: {folder / STATE_JSON} does not exist")
    meta = checkpoint.read_json(folder / STATE_JSON)
    if not isinstance(meta.get("config"), dict) or not isinstance(meta.get("step"), int):
        raise ValueError(f"corrupt training state {folder / STATE_JSON}: no step or config")
    changed = {k: (v, meta["config"].get(k)) for k, v in asdict(cfg).items()
               if k not in RESUMABLE_CHANGES and meta["config"].get(k) != v}
    if changed:
        raise ValueError(f"cannot resume {run_dir} with other training options (now, saved): {changed}")
    tensors = checkpoint.load_state_dict(folder / "state.safetensors")

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    for module, prefix in ((model, "model."), (ema, "ema.")):
        if module is not None:
            try:
                missing, unexpected = module.load_state_dict(part(prefix), strict=False)
            except RuntimeError:  # same names, other shapes
                missing, unexpected = ["(tensors of other shapes)"], []
            if missing or unexpected:
                raise ValueError(f"{folder} was saved by another model (another preset or stage?): missing "
                                 f"{missing[:3]}, unexpected {unexpected[:3]}")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in part("optimizer.p.").items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    return meta["step"], list(meta.get("log", []))


def write_log(rows: list[dict], run_dir: Path) -> None:
    """`RUN_DIR/log.csv` (step, loss, lr, seconds), replaced atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["step", "loss", "lr", "seconds"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    checkpoint.atomic_write(Path(run_dir) / LOG, lambda tmp: Path(tmp).write_text(text.getvalue()))


def plot_losses(rows: list[dict], path: Path) -> None:
    """The loss curve as a PNG, drawn without pyplot so a notebook's plotting backend is left alone."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3), tight_layout=True)
    ax = fig.add_subplot()
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows])
    ax.set(xlabel="step", ylabel="loss", yscale="log", title=path.parent.name)
    checkpoint.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
