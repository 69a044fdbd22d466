"""Self-describing checkpoints: `model.safetensors` (weights) + `config.json` (what to rebuild).

Every stage of minimagic (vae, t2i, t2v, videovae, interp, ...) saves a folder that `load(dir)`
can rebuild with nothing else, in the spirit of nanoGPT's checkpoints. Nothing is unpickled.
"""

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import minimagic

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)` then rename onto `path`, so a killed process never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; checkpoints are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_checkpoint(directory: str | Path, state_dict: dict[str, torch.Tensor], stage: str, config: dict,
                    **info) -> Path:
    """Write weights and `{"stage", "config", "minimagic_version", **info}` into `directory`."""
    directory = Path(directory)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state_dict.items()}
    meta = {"stage": stage, "minimagic_version": minimagic.__version__, "config": config, **info}
    atomic_write(directory / WEIGHTS, lambda tmp: save_file(tensors, tmp))
    atomic_write(directory / CONFIG, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))
    return directory


def load_meta(directory: str | Path, stage: str | None = None) -> dict:
    """Read `config.json`, checking that the folder holds a checkpoint of the expected `stage`."""
    directory = Path(directory)
    path = directory / CONFIG
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {directory}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {directory} is not a minimagic checkpoint")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"corrupt checkpoint config {path}: {error}") from None
    if stage is not None and meta.get("stage") != stage:
        raise ValueError(f"{directory} holds a '{meta.get('stage')}' checkpoint, expected a '{stage}' checkpoint")
    return meta


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a `.safetensors` file, turning a truncated or corrupt file into an error that names it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file missing: {path}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"corrupt or truncated weights file {path}: {error}") from None


def load_weights(model: torch.nn.Module, directory: str | Path) -> torch.nn.Module:
    """Load a checkpoint's weights into `model`, naming missing/unexpected keys if they differ."""
    state = load_state_dict(Path(directory) / WEIGHTS)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # same names, other shapes
        raise ValueError(f"weights in {directory} do not fit {type(model).__name__}: {str(error)[:300]}") from None
    if missing or unexpected:
        raise ValueError(f"weights in {directory} do not match {type(model).__name__}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model
