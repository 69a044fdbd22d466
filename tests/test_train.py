"""The training loop: exact resume after a real SIGKILL, the non-finite guard, corrupt state, config checks."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minimagic.__main__ import main
from minimagic.train import Stage, TrainConfig, train
from minimagic.train_state import STATE_DIR

STAGE = textwrap.dedent('''
    import sys, time, torch
    from minimagic.train import Stage, TrainConfig, train

    class SlowRegression(Stage):
        """y = A x + noise, drawn from the run's generator; each batch waits a little so a test can kill."""
        name = "regression"
        def __init__(self, delay):
            torch.manual_seed(0)
            self.model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
            self.delay = delay
        def batch(self, batch_size, generator):
            time.sleep(self.delay)
            x = torch.randn(batch_size, 8, generator=generator)
            return {"x": x, "y": x.sum(1, keepdim=True).sin()}
        def loss(self, model, batch, generator):
            noise = 0.01 * torch.randn(batch["y"].shape)  # the global RNG, saved with the state too
            return torch.nn.functional.mse_loss(model(batch["x"]), batch["y"] + noise)
        def preview(self, model, path, generator):
            pass

    if __name__ == "__main__":
        run_dir, resume, delay = sys.argv[1], sys.argv[2] == "resume", float(sys.argv[3])
        cfg = TrainConfig(steps=30, batch_size=4, lr=1e-2, warmup=3, ema_decay=0.9, checkpoint_every=5,
                          log_every=1, preview_every=1000)
        stage = SlowRegression(delay)
        model = train(stage, cfg, run_dir, resume=resume)
        torch.save({k: v for k, v in model.state_dict().items()}, run_dir + "/final.pt")
''')


def run(script: Path, run_dir: Path, mode: str, delay: float) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), str(run_dir), mode, str(delay)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def saved_step(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / STATE_DIR / "state.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def test_resume_after_sigkill_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    script = tmp_path / "regression.py"
    script.write_text(STAGE)
    reference = run(script, tmp_path / "reference", "fresh", 0.0)
    assert reference.wait(timeout=120) == 0, reference.stderr.read().decode()

    killed = run(script, tmp_path / "killed", "fresh", 0.1)
    deadline = time.time() + 120
    while saved_step(tmp_path / "killed") < 10 and time.time() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert killed.returncode == -signal.SIGKILL
    step = saved_step(tmp_path / "killed")
    assert 10 <= step < 30, f"the run was killed at step {step}, not in the middle"
    assert not (tmp_path / "killed" / "final.pt").exists()

    resumed = run(script, tmp_path / "killed", "resume", 0.0)
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read().decode()
    expected = torch.load(tmp_path / "reference" / "final.pt", weights_only=True)
    got = torch.load(tmp_path / "killed" / "final.pt", weights_only=True)
    for name, value in expected.items():
        assert torch.equal(value, got[name]), name
    with open(tmp_path / "killed" / "log.csv") as file:
        assert len(file.readlines()) == 1 + 30  # the resumed run continues the loss log


class Quadratic(Stage):
    name = "quadratic"

    def __init__(self, nan_at: int = -1):
        self.model = torch.nn.Linear(2, 1)
        self.nan_at, self.calls = nan_at, 0

    def batch(self, batch_size, generator):
        return {"x": torch.randn(batch_size, 2, generator=generator)}

    def loss(self, model, batch, generator):
        self.calls += 1
        loss = model(batch["x"]).square().mean()
        return loss * float("nan") if self.calls == self.nan_at else loss

    def preview(self, model, path, generator):
        pass


def test_a_non_finite_step_is_skipped_and_reported(tmp_path, capsys):
    stage = Quadratic(nan_at=2)
    before = [p.detach().clone() for p in stage.model.parameters()]
    train(stage, TrainConfig(steps=3, batch_size=2, warmup=1, log_every=1), tmp_path)
    assert "step 2: non-finite loss" in capsys.readouterr().out
    assert all(torch.isfinite(p).all() for p in stage.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, stage.model.parameters(), strict=True))


def test_bf16_on_the_cpu_runs_the_forward_in_bfloat16_and_keeps_the_weights_in_fp32(tmp_path):
    """`--precision bf16` on a CPU (bench/stages.py's bf16 lever): autocast, not bfloat16 weights."""
    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        stage, outputs = Quadratic(), []
        stage.model.register_forward_hook(lambda module, inputs, output, seen=outputs: seen.append(output.dtype))
        before = stage.model.weight.detach().clone()
        train(stage, TrainConfig(steps=2, batch_size=2, warmup=1, precision=precision, device="cpu"),
              tmp_path / precision)
        assert outputs and set(outputs) == {dtype}
        assert stage.model.weight.dtype == torch.float32 and not torch.equal(stage.model.weight, before)


def test_resume_refuses_missing_corrupt_or_different_state(tmp_path):
    cfg = TrainConfig(steps=2, batch_size=2, warmup=1, checkpoint_every=2)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(Quadratic(), cfg, tmp_path / "empty", resume=True)
    train(Quadratic(), cfg, tmp_path / "run")
    with pytest.raises(ValueError, match="other training options"):
        train(Quadratic(), TrainConfig(steps=4, batch_size=3, warmup=1), tmp_path / "run", resume=True)
    train(Quadratic(), TrainConfig(steps=4, batch_size=2, warmup=1, checkpoint_every=2), tmp_path / "run",
          resume=True)  # more steps: fine
    (tmp_path / "run" / STATE_DIR / "state.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"corrupt or truncated .*state.safetensors"):
        train(Quadratic(), cfg, tmp_path / "run", resume=True)


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    class Fixed(Quadratic):
        def batch(self, batch_size, generator):
            return {"x": torch.ones(batch_size, 2)}

    small, big = Fixed(), Fixed()
    big.model.load_state_dict(small.model.state_dict())
    train(small, TrainConfig(steps=3, batch_size=2, grad_accum=2, warmup=1, grad_clip=0), tmp_path / "a")
    train(big, TrainConfig(steps=3, batch_size=4, warmup=1, grad_clip=0), tmp_path / "b")
    for a, b in zip(small.model.parameters(), big.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_nonsense_training_options_are_refused():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.5)


def test_the_training_command_gives_the_same_weights_every_time(tmp_path):
    """The stage's new layers are initialised after seeding, so a recorded command reproduces its checkpoint."""
    for name in ("first", "second"):
        main(["train", "vae", "--preset", "tiny", "--steps", "1", "--batch-size", "2",
              "--run-dir", str(tmp_path / name), "--out", str(tmp_path / name / "checkpoint")])
    first, second = (load_file(tmp_path / name / "checkpoint" / "model.safetensors") for name in ("first", "second"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
