"""Nothing lost, nothing silently wrong: kills at every write, run-folder ownership, broken weights."""

import csv
import itertools
import os

import pytest
import torch
from safetensors.torch import load_file

from minimagic import checkpoint
from minimagic.train import Stage, TrainConfig, train
from minimagic.train_state import STATE_DIR, claim_run_folder


class Killed(BaseException):
    """What a SIGKILL does to a write: it stops there (BaseException: no `except Exception` catches it)."""


class Noisy(Stage):
    """A small regression whose batches and loss noise both come from the run's generator."""

    name = "noisy"

    def __init__(self, break_at: int = -1):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 2)
        self.break_at, self.calls = break_at, 0

    def batch(self, batch_size, generator):
        return {"x": torch.randn(batch_size, 3, generator=generator)}

    def loss(self, model, batch, generator):
        self.calls += 1
        noise = torch.randn(batch["x"].shape[0], 2, generator=generator)
        loss = (model(batch["x"]) - noise).square().mean()
        if self.calls == self.break_at:  # a model that breaks while its loss and gradients still look fine
            model.weight.data[0, 0] = float("inf")
        return loss

    def preview(self, model, path, generator):
        pass

    def save(self, model, directory, command, **info):
        checkpoint.save_checkpoint(directory, model.state_dict(), self.name, {"width": 3}, command=command, **info)


CFG = TrainConfig(steps=3, batch_size=4, lr=1e-2, warmup=1, ema_decay=0.5, log_every=1, checkpoint_every=1)


def run(run_dir, resume=False):
    """What `python -m minimagic train` does: train, saving on the way, then save the final weights."""
    stage = Noisy()
    model = train(stage, CFG, run_dir, lambda model, step: stage.save(model, run_dir / "out", "test", step=step),
                  resume=resume)
    stage.save(model, run_dir / "out", "test", step=CFG.steps)
    return model


def count_writes(monkeypatch, kill_at: int | None = None) -> itertools.count:
    """Count every file written or renamed into place by minimagic.checkpoint; the `kill_at`-th one is killed,
    and the clean-up a dying process would not do is skipped."""
    counter = itertools.count(1)

    def counted(original):
        def write(*args):
            if next(counter) == kill_at:
                monkeypatch.setattr(checkpoint, "remove", lambda path: None)  # the process is gone: no cleanup
                raise Killed
            return original(*args)

        return write

    for name in ("write_tensors", "write_text", "rename"):
        monkeypatch.setattr(checkpoint, name, counted(getattr(checkpoint, name)))
    return counter


def log_rows(run_dir):
    with open(run_dir / "log.csv", newline="") as file:
        return [(row["step"], row["loss"], row["lr"]) for row in csv.DictReader(file)]


def test_a_kill_at_every_write_leaves_a_complete_checkpoint_and_resumes_exactly(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        counter = count_writes(patch)
        expected = run(tmp_path / "reference").state_dict()
        writes = next(counter) - 1
    assert writes >= 20  # per step: state (2 files + renames), log, checkpoint (2 files + renames)
    for kill_at in range(1, writes + 1):
        run_dir = tmp_path / f"kill{kill_at}"
        with monkeypatch.context() as patch:
            count_writes(patch, kill_at)
            with pytest.raises(Killed):
                run(run_dir)
        out = run_dir / "out"
        checkpoint.recover(out)
        if out.exists():  # the previous complete checkpoint or the new one, never a mix
            meta, weights = checkpoint.load_meta(out), load_file(out / checkpoint.WEIGHTS)
            assert meta["step"] in (1, 2, 3) and set(weights) == {"weight", "bias"}
        resumable = (run_dir / STATE_DIR).exists() or (run_dir / f".{STATE_DIR}.old").exists()
        got = run(run_dir, resume=resumable).state_dict()
        assert all(torch.equal(got[k], v) for k, v in expected.items()), f"killed at write {kill_at}"
        assert log_rows(run_dir) == log_rows(tmp_path / "reference"), f"killed at write {kill_at}"
        final = load_file(out / checkpoint.WEIGHTS)
        assert all(torch.equal(final[k], v) for k, v in expected.items())
        assert not [p.name for p in run_dir.rglob(".*") if ".tmp-" in p.name or p.name.endswith(".old")]


def test_leftover_temporaries_are_removed_and_a_half_swapped_folder_comes_back(tmp_path):
    folder = tmp_path / "ckpt"
    checkpoint.save_checkpoint(folder, {"w": torch.ones(2)}, "x", {})
    os.replace(folder, tmp_path / ".ckpt.old")  # killed between the two renames of the next save
    (tmp_path / ".ckpt.tmp-abc").mkdir()
    checkpoint.recover(folder)
    assert torch.equal(load_file(folder / checkpoint.WEIGHTS)["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_new_run_into_a_used_folder_needs_resume_or_overwrite(tmp_path):
    run(tmp_path / "run")
    before = (tmp_path / "run" / "log.csv").read_bytes()
    with pytest.raises(ValueError, match="holds another run"):
        run(tmp_path / "run")
    assert (tmp_path / "run" / "log.csv").read_bytes() == before
    (tmp_path / "run" / "preview_000099.png").write_bytes(b"old")
    train(Noisy(), TrainConfig(steps=2, batch_size=4, warmup=1, log_every=1), tmp_path / "run", overwrite=True)
    assert len(log_rows(tmp_path / "run")) == 2  # the new run's log
    assert not (tmp_path / "run" / STATE_DIR).exists() and not (tmp_path / "run" / "preview_000099.png").exists()


def test_a_second_process_on_a_running_folder_is_refused(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    (tmp_path / "run").mkdir()
    fd = os.open(tmp_path / "run" / ".lock", os.O_RDWR | os.O_CREAT)  # another process's lock
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(ValueError, match="in use by another training process"):
            claim_run_folder(tmp_path / "run", resume=False)
    finally:
        os.close(fd)


def test_weights_that_turn_non_finite_stop_the_run_naming_the_step_and_keep_the_last_checkpoint(tmp_path):
    stage = Noisy(break_at=3)
    with pytest.raises(ValueError, match="step 3: the weights are no longer finite"):
        train(stage, CFG, tmp_path, lambda model, step: stage.save(model, tmp_path / "out", "test", step=step))
    assert checkpoint.load_meta(tmp_path / "out")["step"] == 2
    checkpoint.load_weights(torch.nn.Linear(3, 2), tmp_path / "out")  # finite: it loads


def test_a_run_whose_every_step_was_skipped_fails(tmp_path):
    class AlwaysNaN(Noisy):
        def loss(self, model, batch, generator):
            return model(batch["x"]).sum() * float("nan")

    with pytest.raises(ValueError, match="every step from 1 to 3 was skipped"):
        train(AlwaysNaN(), CFG, tmp_path)


def test_non_finite_weights_are_neither_saved_nor_loaded(tmp_path):
    with pytest.raises(ValueError, match="non-finite weights"):
        checkpoint.save_checkpoint(tmp_path / "a", {"w": torch.tensor([float("nan")])}, "x", {})
    checkpoint.save_checkpoint(tmp_path / "b", {"w": torch.ones(1)}, "x", {})
    from safetensors.torch import save_file

    save_file({"w": torch.tensor([float("inf")])}, tmp_path / "b" / checkpoint.WEIGHTS)
    with pytest.raises(ValueError, match="non-finite weights"):
        checkpoint.load_weights(torch.nn.ParameterDict({"w": torch.nn.Parameter(torch.ones(1))}), tmp_path / "b")


@pytest.fixture(scope="module")
def tiny_pipe():
    from minimagic.pipeline import TextToVideoPipeline
    from minimagic.text import TextEncoder
    from minimagic.unet import UNet2D, UNetConfig
    from minimagic.vae import VAE, VAEConfig
    from minimagic.video_unet import VideoUNet

    torch.manual_seed(0)
    text = TextEncoder()
    unet = VideoUNet.from_unet2d(UNet2D(UNetConfig.preset("tiny", context_dim=text.dim)), 2)
    return TextToVideoPipeline(unet, VAE(VAEConfig.preset("tiny")), text, image_size=16)


@pytest.mark.parametrize("option", ["eta", "fps", "guidance_scale"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_the_pipeline_refuses_non_finite_numbers(tiny_pipe, option, value):
    with pytest.raises(ValueError, match=f"{option} must be a finite number"):
        tiny_pipe(["the digit one"], num_inference_steps=2, **{option: value})


def test_the_pipeline_samples_a_long_prompt_list_in_slices(tiny_pipe, monkeypatch):
    seen = []
    handle = tiny_pipe.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    monkeypatch.setattr(tiny_pipe, "max_batch_size", 2)
    try:
        latents = tiny_pipe(["the digit one"] * 5, num_inference_steps=2, return_latents=True)
    finally:
        handle.remove()
    assert latents.shape[0] == 5 and max(seen) == 2 * 2  # two prompts at a time, doubled for guidance


def test_the_pipeline_refuses_a_nan_result(tiny_pipe, monkeypatch):
    monkeypatch.setattr(tiny_pipe.vae.config, "scale_factor", 0.0)  # a broken config: z / 0
    with pytest.raises(ValueError, match="produced NaN or inf"):
        tiny_pipe(["the digit one"], num_inference_steps=2)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_save_video_refuses_nan_and_inf(bad, tmp_path):
    from minimagic.video import save_video

    video = torch.zeros(2, 1, 4, 4)
    video[1, 0, 0, 0] = bad
    with pytest.raises(ValueError, match="1 NaN or inf values"):
        save_video(video, tmp_path / "clip.gif")
    with pytest.raises(ValueError, match="fps must be in"):
        save_video(torch.zeros(2, 1, 4, 4), tmp_path / "clip.gif", fps=bad)
    assert not (tmp_path / "clip.gif").exists()
