"""Command-line flags made from dataclasses (a stage's Options, TrainConfig), and checks of output paths.

The CLI (`__main__.py`) reads every stage's flags from its Options dataclass: a field `data_root: str | None`
with `metadata={"help": ...}` becomes `--data-root TEXT`; bools take true/false; numbers must be finite.
"""

import argparse
import math
import typing
from dataclasses import MISSING, fields
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message}\n")


def number(kind: type):
    """An argparse type: a finite int or float."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        return value

    parse.__name__ = kind.__name__
    return parse


def boolean(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"{text!r} is not true or false")
    return text.lower() in ("true", "1", "yes")


def add_flags(parser: argparse.ArgumentParser, dataclass: type, defaults: dict | None = None) -> None:
    """One `--flag` per field of `dataclass`, typed by its annotation; None (not given) keeps the default
    (`defaults` overrides the dataclass's, as a stage's TrainConfig values do)."""
    hints = typing.get_type_hints(dataclass)
    for f in fields(dataclass):
        kinds = [k for k in typing.get_args(hints[f.name]) or (hints[f.name],) if k is not type(None)]
        kind = {bool: boolean, int: number(int), float: number(float)}.get(kinds[0], str)
        default = (defaults or {}).get(f.name, f.default)
        default = "" if default is MISSING else f" (default {default})"
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, help=f.metadata.get("help", "") + default)


def check_output(path: Path, what: str) -> None:
    """Fail now, not after the work, on an output path that cannot be written."""
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{what} {path}: {parent} is a file, not a folder")
    if what == "--out" and path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is a file: the checkpoint is a folder")
    if what == "--out" and path.is_dir() and any(path.iterdir()) and not (path / "config.json").is_file():
        raise ValueError(f"{what} {path} holds other files, not a checkpoint to replace")
    if what == "--out video" and path.is_dir():
        raise ValueError(f"--out {path} is a folder, not a video file")
