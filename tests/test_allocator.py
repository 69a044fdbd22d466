"""The allocator setting (minimagic/allocator.py): applied by the CLI and the training loop, off on request."""

import os
import platform
import subprocess
import sys

import pytest
import torch

from minimagic import allocator
from minimagic.__main__ import main
from minimagic.train import Stage, TrainConfig, train


class FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, parameter, value):
        self.calls.append((parameter.value, value.value))
        return 1


def test_the_setting_is_applied_once_and_can_be_turned_off(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(allocator, "applied", {})
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: libc)
    monkeypatch.setenv("MINIMAGIC_ALLOCATOR", "0")
    assert allocator.configure() is False and libc.calls == []
    monkeypatch.delenv("MINIMAGIC_ALLOCATOR")
    assert allocator.configure() is True
    assert sorted(libc.calls) == sorted(allocator.SETTINGS.items())
    assert allocator.configure() is True and len(libc.calls) == 3  # once per process


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
@pytest.mark.parametrize("switch, expected", [("1", "3"), ("0", "0")])
def test_glibc_takes_the_setting_in_a_real_process(switch, expected):
    env = {**os.environ, "MINIMAGIC_ALLOCATOR": switch}
    code = "from minimagic import allocator; allocator.configure(); print(len(allocator.applied))"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == expected, result.stderr


def test_the_cli_and_the_training_loop_apply_it(monkeypatch, tmp_path):
    called = []
    monkeypatch.setattr(allocator, "configure", lambda: called.append("configure"))
    with pytest.raises(SystemExit):
        main(["train", "nosuch"])
    assert called == ["configure"]

    class Tiny(Stage):
        name, model = "tiny", torch.nn.Linear(1, 1)

        def batch(self, batch_size, generator):
            return {"x": torch.ones(batch_size, 1)}

        def loss(self, model, batch, generator):
            return model(batch["x"]).square().mean()

        def preview(self, model, path, generator):
            pass

    train(Tiny(), TrainConfig(steps=1, batch_size=1, warmup=1), tmp_path)
    assert called == ["configure", "configure"]
