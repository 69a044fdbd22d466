"""Self-describing checkpoints: `model.safetensors` (weights) + `config.json` (what to rebuild).

Every stage of minimagic (vae, t2i, t2v, videovae, interp, ...) saves a folder that `load(dir)` can rebuild
with nothing else, in the spirit of nanoGPT's checkpoints. Nothing is unpickled. A folder is written as a
unit (`write_folder`): into a temporary sibling that then takes its place, so a killed process leaves the
previous checkpoint or the new one, never a mix. Loading refuses non-finite weights and nonsense configs.
"""

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import minimagic

WEIGHTS, CONFIG = "model.safetensors", "config.json"
MAX_SIZE = 4096  # no width, image side, frame count or length in a config is larger: beyond it, a typo


# Every write of this module goes through these four, the points a test kills it at (tests/test_faults.py).
write_tensors = save_file  # (tensors, path)
rename = os.replace  # (source, target)


def write_text(path: Path, text: str) -> None:
    Path(path).write_text(text)


def remove(path: Path) -> None:
    shutil.rmtree(path) if Path(path).is_dir() and not Path(path).is_symlink() else Path(path).unlink(missing_ok=True)


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)` then rename onto `path`, so a killed process never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; checkpoints are meant to be shared
        rename(Path(tmp), path)
    finally:
        remove(Path(tmp))


def remove_leftovers(folder: Path, older_than: float = 0.0) -> None:
    """Remove the temporaries (`.NAME.tmp-*`) that killed writes left in `folder`, if older than `older_than` s."""
    for leftover in Path(folder).glob(".*.tmp-*"):
        if time.time() - leftover.lstat().st_mtime >= older_than:
            remove(leftover)


def recover(directory: Path) -> None:
    """Finish what a killed `write_folder` left: the previous folder back if the new one never took its
    place, and no temporary folders or files."""
    directory = Path(directory)
    old = directory.with_name(f".{directory.name}.old")
    if old.is_dir():
        remove(old) if directory.exists() else rename(old, directory)
    for leftover in directory.parent.glob(f".{directory.name}.tmp-*"):
        remove(leftover)


def write_folder(directory: str | Path, write, marker: str = CONFIG) -> Path:
    """`write(folder)` fills a temporary folder that then replaces `directory` (renamed away, then removed).
    A non-empty `directory` without `marker` is not ours to replace: refused."""
    directory = Path(directory)
    recover(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file, not a checkpoint folder")
    if directory.is_dir() and any(directory.iterdir()) and not (directory / marker).is_file():
        raise ValueError(f"refusing to replace {directory}: it is not empty and holds no {marker}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    old = directory.with_name(f".{directory.name}.old")
    try:
        write(tmp)
        tmp.chmod(0o755)
        if directory.exists():
            rename(directory, old)
        rename(tmp, directory)
    finally:
        if tmp.exists():
            remove(tmp)
    if old.exists():
        remove(old)
    return directory


def check_finite(state_dict: dict[str, torch.Tensor], where) -> None:
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{where}: non-finite weights (NaN or inf) in {len(bad)} tensors, e.g. {bad[0]}")


def write_files(folder: Path, state_dict: dict[str, torch.Tensor], stage: str, config: dict, **info) -> None:
    """The two files of a checkpoint, written into `folder` (a `write_folder` temporary)."""
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state_dict.items()}
    check_finite(tensors, f"checkpoint {stage}")
    meta = {"stage": stage, "minimagic_version": minimagic.__version__, "config": config, **info}
    folder.mkdir(parents=True, exist_ok=True)
    write_tensors(tensors, folder / WEIGHTS)
    try:
        text = json.dumps(meta, indent=2, allow_nan=False) + "\n"
    except ValueError:
        raise ValueError(f"checkpoint {stage}: its config holds NaN or inf, the model is broken: {config}") from None
    write_text(folder / CONFIG, text)


def save_checkpoint(directory: str | Path, state_dict: dict[str, torch.Tensor], stage: str, config: dict,
                    **info) -> Path:
    """Write weights and `{"stage", "config", "minimagic_version", **info}` into `directory`, as a unit."""
    return write_folder(directory, lambda folder: write_files(folder, state_dict, stage, config, **info))


def read_json(path: Path) -> dict:
    """A JSON object from `path`; NaN/Infinity, other types and sizes beyond MAX_SIZE are refused."""

    def refuse(constant: str):
        raise ValueError(f"{path} holds {constant}")

    try:
        meta = json.loads(Path(path).read_text(), parse_constant=refuse)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"corrupt JSON file {path}: {error}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} holds a JSON {type(meta).__name__}, not an object")
    return meta


def _check_sizes(config, path: Path, key: str = "config") -> None:
    if isinstance(config, dict):
        for name, value in config.items():
            _check_sizes(value, path, f"{key}.{name}")
    elif isinstance(config, list):
        for value in config:
            _check_sizes(value, path, key)
    elif isinstance(config, int) and not isinstance(config, bool) and abs(config) > MAX_SIZE:
        raise ValueError(f"{path}: {key} = {config} is beyond the sane bound {MAX_SIZE}")


def load_meta(directory: str | Path, stage: str | None = None) -> dict:
    """Read `config.json`, checking that the folder holds a checkpoint of the expected `stage`."""
    directory = Path(directory)
    path = directory / CONFIG
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {directory}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {directory} is not a minimagic checkpoint")
    meta = read_json(path)
    if not isinstance(meta.get("stage"), str) or not isinstance(meta.get("config"), dict):
        raise ValueError(f"{path} is not a minimagic checkpoint config: it needs a 'stage' and a 'config' object")
    _check_sizes(meta["config"], path)
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
    check_finite(state, directory)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # same names, other shapes
        raise ValueError(f"weights in {directory} do not fit {type(model).__name__}: {str(error)[:300]}") from None
    if missing or unexpected:
        raise ValueError(f"weights in {directory} do not match {type(model).__name__}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's weights, so caches made with other weights are never reused."""
    hasher = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        hasher.update(name.encode())
        hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()[:12]
