"""torch.compile of the training step and the sampler's denoiser (minimagic/compilation.py), and bench/stages.py.

Inductor takes ~20 s to compile even a tiny model's step on this CPU, so these tests compile with the
"aot_eager" backend: the same Dynamo graphs and AOTAutograd backward, without generating kernels. The inductor
path itself runs in `python bench/stages.py` (docs/efficiency.md). The allocator's tests are test_allocator.py.
"""

import csv

import pytest
import torch
from torch import nn

from minimagic import compilation
from minimagic.pipeline import TextToVideoPipeline
from minimagic.text import TextEncoder
from minimagic.train import Stage, TrainConfig, train
from minimagic.unet import UNet2D, UNetConfig
from minimagic.vae import VAE, VAEConfig
from minimagic.video_unet import VideoUNet


@pytest.fixture
def aot_eager(monkeypatch):
    """compilation.py with the fast backend, counting its compiled_loss calls."""
    calls = []
    compiled_loss = compilation.compiled_loss
    monkeypatch.setattr(compilation, "BACKEND", "aot_eager")
    monkeypatch.setattr(compilation, "compiled_loss", lambda loss: calls.append(loss) or compiled_loss(loss))
    return calls


class TinyStage(Stage):
    """Conv, GroupNorm, SiLU, conv: reconstruct random images."""

    name = "tiny"

    def __init__(self):
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.SiLU(),
                                   nn.Conv2d(4, 1, 3, padding=1))

    def batch(self, batch_size, generator):
        return {"x": torch.randn(batch_size, 1, 8, 8, generator=generator)}

    def loss(self, model, batch, generator):
        noise = torch.randn(batch["x"].shape, generator=generator)  # the loss's own draw, as diffusion's
        return (model(batch["x"] + 0.1 * noise) - batch["x"]).square().mean()

    def preview(self, model, path, generator):
        pass


def run(tmp_path, name: str, compile: bool) -> tuple[nn.Module, list[float]]:
    config = TrainConfig(steps=3, batch_size=4, lr=1e-2, warmup=1, log_every=1, compile=compile)
    model = train(TinyStage(), config, tmp_path / name)
    with open(tmp_path / name / "log.csv") as log:
        return model, [float(row["loss"]) for row in csv.DictReader(log)]


def test_a_compiled_training_step_gives_the_eager_loss(tmp_path, aot_eager):
    eager, eager_losses = run(tmp_path, "eager", compile=False)
    assert aot_eager == []  # off: the loss runs eagerly
    compiled, compiled_losses = run(tmp_path, "compiled", compile=True)
    assert len(aot_eager) == 1
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-5) and len(set(eager_losses)) == 3
    for a, b in zip(eager.parameters(), compiled.parameters(), strict=True):  # the compiled step trained the model
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_run_resumes_with_compile_switched(tmp_path, aot_eager):
    """Compiling changes no maths: a run saved eagerly continues compiled (and one saved before the option)."""
    train(TinyStage(), TrainConfig(steps=2, batch_size=4, warmup=1, checkpoint_every=2), tmp_path / "run")
    model = train(TinyStage(), TrainConfig(steps=3, batch_size=4, warmup=1, checkpoint_every=2, compile=True),
                  tmp_path / "run", resume=True)
    assert len(aot_eager) == 1 and not compilation.is_compiled(model)


def test_the_trained_model_stays_a_plain_module(tmp_path, aot_eager):
    for compile in (False, True):
        model, _ = run(tmp_path, f"compile-{compile}", compile=compile)
        assert not compilation.is_compiled(model)
        assert all(not key.startswith("_orig_mod") for key in model.state_dict())


def test_the_pipeline_compiles_its_denoiser_in_place(aot_eager):
    text = TextEncoder()
    unet = VideoUNet.from_unet2d(UNet2D(UNetConfig.preset("tiny", context_dim=text.dim)), num_frames=3)
    pipeline = TextToVideoPipeline(unet, VAE(VAEConfig.preset("tiny")), text, image_size=16)
    keys = list(unet.state_dict())
    assert not compilation.is_compiled(pipeline.unet)  # off by default: a plain module
    assert pipeline.compile() is pipeline and pipeline.unet is unet and compilation.is_compiled(unet)
    assert list(unet.state_dict()) == keys  # checkpoints are written as before
    assert not compilation.is_compiled(compilation.uncompile(unet))


def test_a_module_compiled_in_place_computes_the_eager_output(aot_eager):
    model = TinyStage().model.eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        eager = model(x)
        compiled = compilation.compile_in_place(model)(x)
    assert compilation.is_compiled(model) and not torch.equal(eager, torch.zeros_like(eager))
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


def test_frozen_weights_compile_the_eager_output_and_keep_the_weights_they_were_compiled_with():
    """Inductor itself (freezing is an inductor pass; aot_eager ignores it), on a two-layer model: ~10 s."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.SiLU(), nn.Conv2d(4, 1, 3, padding=1)).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        eager = model(x)
        compilation.compile_in_place(model)
        with compilation.frozen_weights():
            frozen = model(x)  # compiles, with the weights as constants
            model[0].weight.mul_(2)  # what frozen_weights' docstring warns about: a later change is not seen
            stale = model(x)
    torch.testing.assert_close(frozen, eager, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(stale, eager, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(compilation.uncompile(model)(x), eager, atol=1e-3)  # the eager model sees it


def test_the_stage_bench_quick_mode_runs(load_script, tmp_path):
    bench = load_script("bench/stages.py")
    results = bench.main(["--quick", "--stages", "encode,vae", "--threads", "1", "--out", str(tmp_path / "s.json")])
    assert list(results["stages"]) == ["encode", "vae"] and (tmp_path / "s.json").is_file()
    for row in results["stages"].values():
        assert row["on"]["gflop_per_step"] > 0 and row["on"]["eager"]["steps_per_s"] > 0
        assert bench.ratios(row)["channels_last"] > 0 and bench.ratios(row)["bf16"] > 0
    assert all(peak["gflop_per_s"] > 0 for peak in results["peak"])
    with pytest.raises(ValueError, match="unknown stages"):
        bench.main(["--quick", "--stages", "nosuch"])
