"""bench/efficiency.py: its FLOP counter sees attention, fake and real tensors agree, --quick fills every field."""


import pytest
import torch


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("bench/efficiency.py")


def test_flop_counter_counts_every_kind_of_attention(bench):
    torch.manual_seed(0)
    model = bench.video_unet(bench.TINY)
    inputs = bench.denoiser_inputs(bench.TINY, bench.TINY.latent, 1, model.unet_config.context_dim)
    counts = bench.count_flops(model, inputs)
    assert counts["attention"] > 0  # 0 when the CPU attention kernel has no registered formula
    assert all(flops > 0 for flops in counts["attention_by_kind"].values()), counts["attention_by_kind"]
    assert counts["convolution"] > 0 and counts["matmul"] > 0
    backward = bench.count_flops(model, inputs, backward=True)
    assert backward["attention"] > 2 * counts["attention"]  # the backward kernel is counted too


def test_fake_tensor_counts_equal_real_tensor_counts(bench):
    """FLOPs at the paper's setting are counted on fake tensors: they must match a real pass."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    torch.manual_seed(0)
    real_model = bench.video_unet(bench.TINY)
    real_inputs = bench.denoiser_inputs(bench.TINY, bench.TINY.latent, 1, real_model.unet_config.context_dim)
    real = bench.count_flops(real_model, real_inputs)
    with FakeTensorMode():
        fake_model = bench.video_unet(bench.TINY)
        fake_inputs = bench.denoiser_inputs(bench.TINY, bench.TINY.latent, 1, fake_model.unet_config.context_dim)
        fake = bench.count_flops(fake_model, fake_inputs)
    assert fake["total"] == real["total"] and fake["attention"] == real["attention"]


def test_pixel_space_costs_more_than_latent_space(bench):
    row = bench.flop_comparison(bench.TINY)
    assert row["pixel"]["total"] > row["latent"]["total"] > 0
    assert row["ratio"] == pytest.approx(row["pixel"]["total"] / row["latent"]["total"])
    assert row["positions_ratio"] == (16 * 16) / (8 * 8)


def test_quick_mode_produces_every_field(bench, tmp_path):
    pytest.importorskip("diffusers")
    results = bench.main(["--quick", "--out", str(tmp_path / "r.json"), "--md", str(tmp_path / "r.md")])
    assert set(results) == {"meta", "flops", "speed", "training"}
    assert results["meta"]["quick"] is True and results["meta"]["command"].endswith("--quick --out "
                                                                                   f"{tmp_path / 'r.json'} --md "
                                                                                   f"{tmp_path / 'r.md'}")
    assert results["flops"][0]["latent"]["attention"] > 0
    speed, training = results["speed"], results["training"]
    assert set(speed["models"]) == {"minimagic", "diffusers"}
    for field in bench.SPEED_FIELDS:  # every ratio minimagic / diffusers is a positive number
        assert speed["ratios"][field] > 0, field
    assert training["clips_per_s"] > 0 and training["top_ops"], training
    assert (tmp_path / "r.json").is_file() and "FLOPs" in (tmp_path / "r.md").read_text()
