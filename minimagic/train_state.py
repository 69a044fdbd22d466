"""Exact resume: everything a training run needs to continue as if it had never been stopped.

`RUN_DIR/state/` holds the weights, the EMA weights, the optimizer's moments (safetensors), and the step,
the random-number states and the training config (JSON). The data position needs nothing more: every
batch is drawn from the run's seeded generator, whose state is saved. Files are written atomically and
nothing is ever unpickled.
"""

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file

import minimagic
from minimagic.checkpoint import atomic_write, load_state_dict

STATE_DIR, STATE_JSON = "state", "state.json"


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """AdamW's state as flat tensors ("p.<index>.<name>") plus its JSON-able param groups."""
    state = optimizer.state_dict()
    tensors = {f"p.{index}.{name}": value.detach().cpu().contiguous()
               for index, entry in state["state"].items() for name, value in entry.items()}
    return tensors, state["param_groups"]


def save_train_state(run_dir: Path, step: int, model: torch.nn.Module, ema: torch.nn.Module | None,
                     optimizer: torch.optim.Optimizer, generator: torch.Generator, cfg) -> None:
    folder = Path(run_dir) / STATE_DIR
    weights = {f"model.{k}": v for k, v in model.state_dict().items()}
    weights |= {f"ema.{k}": v for k, v in (ema.state_dict() if ema is not None else {}).items()}
    moments, groups = _flatten_optimizer(optimizer)
    tensors = {k: v.detach().cpu().contiguous() for k, v in {**weights, **{f"optimizer.{k}": v for k, v in
                                                                           moments.items()}}.items()}
    tensors["rng.generator"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    atomic_write(folder / "state.safetensors", lambda tmp: save_file(tensors, tmp))
    meta = {"step": step, "config": asdict(cfg), "param_groups": groups, "minimagic_version": minimagic.__version__}
    atomic_write(folder / STATE_JSON, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))


RESUMABLE_CHANGES = {"steps", "log_every", "preview_every", "checkpoint_every", "device"}


def load_train_state(run_dir: Path, model: torch.nn.Module, ema: torch.nn.Module | None,
                     optimizer: torch.optim.Optimizer, generator: torch.Generator, cfg) -> int:
    """Restore a run saved by `save_train_state`; return its step. Errors name the broken file, or the
    training options that differ from the saved run's (only steps, logging and device may change)."""
    folder = Path(run_dir) / STATE_DIR
    if not (folder / STATE_JSON).is_file():
        raise FileNotFoundError(f"nothing to resume: {folder / STATE_JSON} does not exist")
    try:
        meta = json.loads((folder / STATE_JSON).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"corrupt training state {folder / STATE_JSON}: {error}") from None
    changed = {k: (v, meta["config"].get(k)) for k, v in asdict(cfg).items()
               if k not in RESUMABLE_CHANGES and meta["config"].get(k) != v}
    if changed:
        raise ValueError(f"cannot resume {run_dir} with other training options (now, saved): {changed}")
    tensors = load_state_dict(folder / "state.safetensors")

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    for module, prefix in ((model, "model."), (ema, "ema.")):
        if module is not None:
            missing, unexpected = module.load_state_dict(part(prefix), strict=False)
            if missing or unexpected:
                raise ValueError(f"{folder} was saved by another model: missing {missing[:3]}, unexpected "
                                 f"{unexpected[:3]}")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in part("optimizer.p.").items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["step"])
