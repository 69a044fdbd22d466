"""What a reader follows for one `train t2v` step: the minimagic files and functions that run during it.

    PYTHONPATH=. python bench/step_reading.py [--stage t2v]

Runs the stage for 3 steps (previews and checkpoints off) and traces step 2 only, from the stage's `batch`
call to the next one: every minimagic function that runs in between (the batch, the loss, the model, the
optimizer step, the EMA, the log), counted by file, with the lines of those functions. It reads whichever
`minimagic` is first on PYTHONPATH, so the same script measures an older checkout.
"""

import argparse
import inspect
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

import minimagic
from minimagic.train import TrainConfig, train

ROOT = Path(minimagic.__file__).parent


def build(name: str):
    try:  # this checkout: one registry of stage classes taking keyword options
        from minimagic.stages import get_stage

        return get_stage(name)(num_clips=64)
    except ImportError:  # before the stages package: classes with positional presets
        from minimagic.stages import STAGES

        return STAGES[name]("toy", num_clips=64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", default="t2v")
    args = parser.parse_args()
    torch.manual_seed(0)
    stage = build(args.stage)
    seen: set = set()

    def tracer(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(str(ROOT)):
            seen.add(frame.f_code)
        return None

    batch, calls = stage.batch, []

    def traced_batch(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            sys.setprofile(None)
            sys.settrace(tracer)
        elif len(calls) == 3:
            sys.settrace(None)
        return batch(*a, **k)

    stage.batch = traced_batch
    cfg = TrainConfig(**{**getattr(stage, "defaults", {}), "steps": 3, "batch_size": 2, "preview_every": 10**6,
                         "checkpoint_every": 0, "log_every": 1})
    stage.preview = lambda *a, **k: None
    with tempfile.TemporaryDirectory() as run_dir:
        train(stage, cfg, run_dir)
    by_file = defaultdict(list)
    for code in seen:
        by_file[Path(code.co_filename).relative_to(ROOT.parent)].append(code)
    total_lines = 0
    for path, codes in sorted(by_file.items()):
        spans = sorted((c.co_firstlineno, c.co_firstlineno + len(inspect.getsourcelines(c)[0])) for c in codes)
        lines, end = 0, 0
        for start, stop in spans:  # nested functions are counted once, inside their outer one
            lines += max(0, stop - max(start, end))
            end = max(end, stop)
        total_lines += lines
        print(f"{str(path):45s} {len(codes):3d} functions {lines:4d} lines")
    print(f"{len(by_file)} files, {sum(len(c) for c in by_file.values())} functions, {total_lines} lines")


if __name__ == "__main__":
    main()
