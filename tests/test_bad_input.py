"""Bad input and faults against the CLI: each is one line `error: ...` naming the problem, exit status non-zero,
no traceback, and the files that were there before are untouched (flags, paths, numbers, broken checkpoints,
run folders, training faults)."""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from minimagic.__main__ import main
from minimagic.paths import CHECKPOINTS, DATA_DIR
from minimagic.pipeline import TextToVideoPipeline
from minimagic.text import TextEncoder
from minimagic.unet import UNet2D, UNetConfig
from minimagic.vae import VAE, VAEConfig

T2V, T2I, VAE_DIR = (str(CHECKPOINTS / f"{name}-moving-digits") for name in ("t2v", "t2i", "vae"))
GEN = ["generate", "--prompt", "the digit one moves up", "--steps", "2"]
VAE_TRAIN = ["train", "vae", "--preset", "tiny", "--steps", "1", "--batch-size", "2"]
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A tiny t2i pipeline, its broken copies, a used run folder with a training state, a file, a folder."""
    root = tmp_path_factory.mktemp("made")
    torch.manual_seed(0)
    vae = VAE(VAEConfig.preset("tiny"))
    text = TextEncoder()
    unet = UNet2D(UNetConfig.preset("tiny", context_dim=text.dim))
    TextToVideoPipeline(unet, vae, text, image_size=16).save_pretrained(root / "t2i")

    def broken(name: str, change) -> None:
        shutil.copytree(root / "t2i", root / name)
        change(root / name)

    def edit(path: str, change):
        def apply(folder: Path) -> None:
            meta = json.loads((folder / path).read_text())
            change(meta)
            (folder / path).write_text(json.dumps(meta))
        return apply

    broken("list", lambda f: (f / "config.json").write_text("[1, 2]"))
    broken("null", lambda f: (f / "config.json").write_text("null"))
    broken("not-json", lambda f: (f / "config.json").write_text("{"))
    broken("no-config", edit("config.json", lambda m: m.pop("config")))
    broken("unknown-key", edit("config.json", lambda m: m["config"]["unet"].update(foo=1)))
    broken("missing-key", edit("config.json", lambda m: m["config"].pop("image_size")))
    broken("nan-config", lambda f: (f / "vae" / "config.json").write_text(
        (f / "vae" / "config.json").read_text().replace('"scale_factor": 1.0', '"scale_factor": NaN')))
    broken("huge-channels", edit("config.json", lambda m: m["config"]["unet"].update(channels=[10**9, 10**9])))
    broken("huge-image", edit("config.json", lambda m: m["config"].update(image_size=10**6)))
    broken("huge-length", edit("config.json", lambda m: m["config"].update(max_length=10**6)))
    broken("zero-scale", edit("vae/config.json", lambda m: m["config"].update(scale_factor=0.0)))

    def nan_weights(folder: Path) -> None:
        weights = load_file(folder / "model.safetensors")
        next(iter(weights.values())).fill_(float("nan"))
        save_file(weights, folder / "model.safetensors")

    broken("nan-weights", nan_weights)
    broken("truncated", lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:100]))
    broken("symlink-loop", lambda f: ((f / "config.json").unlink(), (f / "config.json").symlink_to(f / "config.json")))
    (root / "empty").mkdir()
    (root / "a-file").write_text("x")
    (root / "folder.gif").mkdir()
    main([*VAE_TRAIN, "--checkpoint-every", "1", "--run-dir", str(root / "run")])  # a used run folder with state
    return root


def files(*roots: Path) -> dict[Path, str]:
    return {p: hashlib.sha1(p.read_bytes()).hexdigest() for root in roots for p in root.rglob("*")
            if p.is_file() and not p.is_symlink()}


def fails_in_one_line(argv: list[str], message: str, capsys, *roots: Path) -> None:
    before = files(*roots)
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    lines = capsys.readouterr().err.strip().splitlines()
    err = lines[-1]  # before it, only progress bars (sampling ran before the NaN showed)
    assert exit_info.value.code not in (0, None)
    assert err.startswith("error:") and all("it/s]" in line for line in lines[:-1]), lines
    assert "Traceback" not in "".join(lines) and message in err, err
    after = files(*roots)
    assert all(after.get(path) == sha for path, sha in before.items()), "a file that existed changed"


FLAGS = [  # category: bad flags and numbers, refused before any model loads
    (["train", "nosuch"], "invalid choice: 'nosuch'"),
    (["train", "vae", "--steps", "abc"], "'abc' is not an integer"),
    (["train", "vae", "--steps", "0"], "steps, batch_size, grad_accum must be >= 1"),
    (["train", "vae", "--steps", "-3"], "steps, batch_size, grad_accum must be >= 1"),
    (["train", "vae", "--lr", "nan"], "'nan' is not a finite number"),
    (["train", "vae", "--lr", "inf"], "'inf' is not a finite number"),
    (["train", "vae", "--lr", "-1"], "lr > 0"),
    (["train", "vae", "--lr", "1e39"], "lr at most 1000, got 65536"[:18]),
    (["train", "vae", "--batch-size", "1e9"], "'1e9' is not an integer"),
    (["train", "vae", "--batch-size", "100000"], "batch_size must be at most 65536"),
    (["train", "vae", "--log-every", "0"], "log_every, preview_every must be >= 1"),
    (["train", "vae", "--preview-every", "0"], "log_every, preview_every must be >= 1"),
    (["train", "vae", "--checkpoint-every", "-1"], "checkpoint_every, warmup, grad_clip, weight_decay >= 0"),
    (["train", "vae", "--warmup", "-5"], "checkpoint_every, warmup, grad_clip, weight_decay >= 0"),
    (["train", "vae", "--ema-decay", "1"], "ema_decay must be in [0, 1)"),
    (["train", "vae", "--grad-accum", "0"], "steps, batch_size, grad_accum must be >= 1"),
    (["train", "vae", "--precision", "fp8"], "precision must be auto, fp32, bf16 or fp16"),
    (["train", "vae", "--device", "foo"], "unknown device 'foo'"),
    (["train", "vae", "--precision", "fp16", "--device", "cpu"], "precision fp16 needs a CUDA GPU"),
    (["train", "vae", "--preset", "huge"], "unknown VAE preset 'huge'"),
    (["train", "t2i", "--preset", "huge"], "unknown UNet preset 'huge'"),
    (["train", "vae", "--data", "foo"], "unknown data 'foo'"),
    (["train", "vae", "--data-root", "x"], "--data-root and --split-file are for a video folder"),
    (["train", "t2i", "--data", "ucf10"], "--data ucf10 needs --data-root"),
    (["train", "vae", "--kl-weight", "inf"], "'inf' is not a finite number"),
    (["train", "videovae", "--temporal-weight", "nan"], "'nan' is not a finite number"),
    (["train", "t2v", "--use-adaptor", "maybe"], "'maybe' is not true or false"),
    (["train", "videovae", "--preset", "toy"], "the videovae stage takes no --preset"),
    (["train", "vae", "--init", "x"], "the vae stage takes no --init"),
    (["generate", "--prompt", "x", "--fps", "nan"], "'nan' is not a finite number"),
    (["generate", "--prompt", "x", "--fps", "inf"], "'inf' is not a finite number"),
    (["generate", "--prompt", "x", "--fps", "0"], "--fps must be in (0, 1000]"),
    (["generate", "--prompt", "x", "--fps", "-8"], "--fps must be in (0, 1000]"),
    (["generate", "--prompt", "x", "--fps", "1e300"], "--fps must be in (0, 1000]"),
    (["generate", "--prompt", "x", "--guidance", "nan"], "'nan' is not a finite number"),
    (["generate", "--prompt", "x", "--interpolate", "-1"], "--interpolate must be >= 0"),
    (["generate", "--prompt", "x", "--seed", "abc"], "'abc' is not an integer"),
    (["generate", "--prompt", "x", "--foo"], "generate takes no --foo"),
    (["generate", "--prompt", "x", "--out", "clip.avi"], "the video must be one of .gif, .mp4"),
    (["generate", "--prompt", "x", "--device", "foo"], "unknown device 'foo'"),
    (["evaluate", "--checkpoint", T2V, "--num-videos", "0"], "--num-videos, --per-digit and --steps must be >= 1"),
    (["generate"], "the following arguments are required: --prompt"),
]


@pytest.mark.parametrize("argv, message", FLAGS)
def test_bad_flags_and_numbers(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fails_in_one_line(argv, message, capsys, tmp_path)


@NO_GPU
@pytest.mark.parametrize("command", [VAE_TRAIN, [*GEN, "--checkpoint", T2I]])
def test_a_gpu_that_is_not_there(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fails_in_one_line([*command, "--device", "cuda"], "no such CUDA GPU here", capsys, tmp_path)


PATHS = [  # category: paths, checked before the work
    ([*VAE_TRAIN, "--run-dir", "{made}/a-file"], "is a file"),
    ([*VAE_TRAIN, "--out", "{made}/a-file"], "is a file: the checkpoint is a folder"),
    ([*VAE_TRAIN, "--out", "{made}/a-file/sub"], "a-file is a file, not a folder"),
    ([*VAE_TRAIN, "--out", "{made}/run"], "holds other files, not a checkpoint to replace"),
    ([*VAE_TRAIN, "--resume", "{made}/no-such-run"], "nothing to resume"),
    ([*VAE_TRAIN, "--run-dir", "{made}/run"], "holds another run"),
    ([*VAE_TRAIN, "--resume", "{made}/run", "--batch-size", "4"], "cannot resume"),
    (["train", "vae", "--preset", "toy", "--steps", "1", "--batch-size", "2", "--checkpoint-every", "1",
      "--resume", "{made}/run"], "was saved by another model"),
    (["train", "t2v", "--init", "{made}/no-such-folder"], "checkpoint folder not found"),
    (["train", "t2v", "--init", VAE_DIR], "holds a 'vae' checkpoint"),
    (["train", "videovae", "--init", T2V], "holds a 't2v' checkpoint"),
    (["train", "interp", "--init", T2I], "text-to-image model"),
    ([*GEN, "--out", "{made}/folder.gif"], "is a folder, not a video file"),
    ([*GEN, "--out", "{made}/a-file/clip.gif"], "a-file is a file, not a folder"),
    ([*GEN, "--checkpoint", "{made}/no-such"], "checkpoint folder not found"),
    ([*GEN, "--checkpoint", VAE_DIR], "holds a 'vae' checkpoint"),
    ([*GEN, "--checkpoint", "{made}/a-file"], "checkpoint folder not found"),
    ([*GEN, "--checkpoint", "{made}/empty"], "is missing"),
    (["evaluate", "--checkpoint", "{made}/no-such"], "checkpoint folder not found"),
    (["evaluate", "--checkpoint", T2V, "--out", "{made}/a-file/results"], "a-file is a file, not a folder"),
    (["evaluate", "--checkpoint", str(CHECKPOINTS / "digit-classifier")], "evaluate knows vae, t2i"),
]


@pytest.mark.parametrize("argv, message", PATHS)
def test_bad_paths_and_run_folders(argv, message, made, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fails_in_one_line([a.format(made=made) for a in argv], message, capsys, made, tmp_path)


CHECKPOINTS_BROKEN = [  # category: broken checkpoints, refused at loading (or at the first NaN)
    ("list", "holds a JSON list, not an object"),
    ("null", "holds a JSON NoneType, not an object"),
    ("not-json", "corrupt JSON file"),
    ("no-config", "needs a 'stage' and a 'config' object"),
    ("unknown-key", "unexpected keyword argument 'foo'"),
    ("missing-key", "is missing ['image_size']"),
    ("nan-config", "holds NaN"),
    ("huge-channels", "config.unet.channels = 1000000000 is beyond the sane bound 4096"),
    ("huge-image", "config.image_size = 1000000 is beyond the sane bound 4096"),
    ("huge-length", "config.max_length = 1000000 is beyond the sane bound 4096"),
    ("nan-weights", "non-finite weights"),
    ("truncated", "corrupt or truncated weights file"),
    ("symlink-loop", "config.json"),
    ("zero-scale", "the model produced NaN or inf values"),
]


@pytest.mark.parametrize("name, message", CHECKPOINTS_BROKEN)
def test_broken_checkpoints(name, message, made, tmp_path, capsys):
    out = tmp_path / "clip.gif"
    fails_in_one_line([*GEN, "--checkpoint", made / name, "--out", out], message, capsys, made)
    assert not out.exists()


def test_a_second_process_on_the_run_folder(made, capsys):
    fd = os.open(made / "run" / ".lock", os.O_RDWR)  # another process holds the run's lock
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        fails_in_one_line([*VAE_TRAIN, "--checkpoint-every", "1", "--resume", made / "run"],
                          "in use by another training process", capsys, made)
    finally:
        os.close(fd)


@pytest.mark.parametrize("argv, message", [
    (["generate", "--prompt", "x", "--fps", "nan"], "'nan' is not a finite number"),
    (["train", "vae", "--device", "foo"], "unknown device 'foo'"),
    (["generate", "--prompt", "x", "--checkpoint", "{made}/list"], "holds a JSON list"),
])
def test_the_real_command_prints_one_line_and_no_traceback(argv, message, made, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(DATA_DIR.parent)}
    result = subprocess.run([sys.executable, "-m", "minimagic", *[a.format(made=made) for a in argv]], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
