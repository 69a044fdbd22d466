"""Super-resolution (minimagic/superres.py, stages/superres.py): shapes, shift equivariance, shared noise, the chain."""

import pytest
import torch
from conftest import randomize_

from minimagic.__main__ import main
from minimagic.paths import SUPERRES_CHECKPOINT
from minimagic.pipeline import TextToVideoPipeline
from minimagic.stages import SuperResStage
from minimagic.superres import SuperResConfig, SuperResolution, downsample, upsample
from minimagic.video import read_video


@pytest.fixture(scope="module")
def model() -> SuperResolution:
    """A tiny super-resolution model with random, non-zero weights everywhere (also the zero-initialised ones)."""
    torch.manual_seed(0)
    model = SuperResolution(SuperResConfig.preset("tiny"))
    with torch.no_grad():
        randomize_(model, 0, scale=0.2)
    return model.eval()


def low_res_clip(size: int = 32, frames: int = 2, patch: int = 16) -> torch.Tensor:
    """(1, F, 1, size, size): a black canvas with a random `patch` x `patch` square in the middle."""
    g = torch.Generator().manual_seed(3)
    video, start = -torch.ones(1, frames, 1, size, size), (size - patch) // 2
    patch_pixels = torch.rand(frames, 1, patch, patch, generator=g) * 2 - 1
    video[..., start : start + patch, start : start + patch] = patch_pixels
    return video


def test_upscale_doubles_height_and_width(model):
    video = low_res_clip(16, frames=3).expand(2, -1, -1, -1, -1)  # (2, 3, 1, 16, 16)
    out = model.upscale(video, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 1, 32, 32) and out.min() >= -1 and out.max() <= 1
    assert upsample(video[0]).shape == (3, 1, 32, 32) and downsample(out[0]).shape == (3, 1, 16, 16)


def test_low_res_shifted_by_one_pixel_shifts_the_output_by_two(model):
    """x_T = 0 is the same after any shift, and DDIM (eta = 0) is deterministic, so the sampler is a function of the
    low-resolution frame alone; every layer (convolutions, GroupNorm statistics, self-attention) commutes with a
    shift as long as no pixel's (local) receptive field sees both the content and a zero-padded border: one DDIM
    step of the tiny U-Net on a 16 px patch in the middle of a 64 px canvas (gaps wider than its receptive field)."""
    low_res = low_res_clip(64)  # (1, 2, 1, 64, 64)
    shifted = torch.roll(low_res, shifts=(1, 1), dims=(-2, -1))
    noise = torch.zeros(1, 2, 1, 128, 128)
    out = model.upscale(low_res, num_inference_steps=1, noise=noise)
    out_shifted = model.upscale(shifted, num_inference_steps=1, noise=noise)
    interior = (..., slice(32, 96), slice(32, 96))
    expected = torch.roll(out, shifts=(2, 2), dims=(-2, -1))
    assert torch.allclose(out_shifted[interior], expected[interior], atol=1e-4)
    assert (out_shifted[interior] - out[interior]).abs().max() > 0.1  # the output does follow the input


def test_shared_noise_gives_identical_frames_the_same_output(model):
    still = low_res_clip(16, frames=1).expand(-1, 3, -1, -1, -1)  # (1, 3, 1, 16, 16): one frame three times
    shared = model.upscale(still, 2, shared_noise=True, generator=torch.Generator().manual_seed(0))
    independent = model.upscale(still, 2, shared_noise=False, generator=torch.Generator().manual_seed(0))
    assert torch.equal(shared[:, 0], shared[:, 1]) and torch.equal(shared[:, 0], shared[:, 2])
    assert not torch.allclose(independent[:, 0], independent[:, 1], atol=1e-3)


def test_bad_input_is_refused_in_one_line(model):
    with pytest.raises(ValueError, match=r"video must be \(B, F, C, h, w\)"):
        model.upscale(torch.zeros(1, 1, 16, 16))  # one frame without its clip axis
    with pytest.raises(ValueError, match=r"must be frames \(N, 1, H, W\)"):
        model.upscale(torch.zeros(1, 2, 3, 16, 16))  # RGB frames for a gray model
    with pytest.raises(ValueError, match="divisible by 4"):  # 15 -> 30 pixels: not through the toy U-Net's 2 halvings
        SuperResolution(SuperResConfig.preset("toy")).upscale(torch.zeros(1, 2, 1, 15, 15))
    with pytest.raises(ValueError, match="noise must be"):
        model.upscale(torch.zeros(1, 2, 1, 16, 16), noise=torch.zeros(1, 2, 1, 16, 16))
    with pytest.raises(ValueError, match="unknown super-resolution preset"):
        SuperResConfig.preset("huge")


def test_pipeline_refuses_upscale_outside_1_and_2(capsys, tmp_path):
    pipe = TextToVideoPipeline.from_pretrained()
    for upscale in (0, 3, 4):
        with pytest.raises(ValueError, match=f"upscale must be 1 or 2.*got {upscale}"):
            pipe("the digit one moves left", upscale=upscale)
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--prompt", "x", "--upscale", "3", "--out", str(tmp_path / "x.gif")])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and "--upscale: invalid choice: 3" in error


def test_saved_checkpoint_loads_with_the_same_output(model, tmp_path):
    model.save_pretrained(tmp_path / "sr", command="test")
    loaded = SuperResolution.from_pretrained(tmp_path / "sr")
    video = low_res_clip(16)
    a = model.upscale(video, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, loaded.upscale(video, 2, generator=torch.Generator().manual_seed(0)))
    shipped = SuperResolution.from_pretrained(SUPERRES_CHECKPOINT)
    assert shipped.config == SuperResConfig.preset("toy")
    with pytest.raises(ValueError, match="expected a 'superres' checkpoint"):
        SuperResolution.from_pretrained(SUPERRES_CHECKPOINT.parent / "interp-moving-digits")


def test_stage_batch_loss_and_save(tmp_path):
    stage = SuperResStage(preset="tiny")
    batch = stage.batch(2, torch.Generator().manual_seed(0))
    assert batch["high_res"].shape == (2, 1, 64, 64)  # real 64x64 frames: the model makes their 32x32 averages
    loss = stage.loss(stage.model, batch, torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and stage.model.unet.conv_out.weight.grad.abs().sum() > 0
    stage.save(stage.model, tmp_path / "sr", command="test")
    assert SuperResolution.from_pretrained(tmp_path / "sr").config == SuperResConfig.preset("tiny")


def test_generate_interpolate_3_upscale_2_writes_29_frames_of_128_pixels(tmp_path):
    """The shipped keyframe and interpolation models, and a narrow random super-resolution model (`--superres`):
    the shipped one takes most of this test's time at 128 px."""
    torch.manual_seed(0)
    narrow = SuperResolution(SuperResConfig(channels=(8, 8, 8), num_heads=2, norm_groups=4))
    with torch.no_grad():
        randomize_(narrow, 0, scale=0.2)  # zero-initialised, it would draw the same frame 29 times (one GIF frame)
    narrow.save_pretrained(tmp_path / "sr")
    out = tmp_path / "chain.gif"
    main(["generate", "--prompt", "the digit seven moves left", "--interpolate", "3", "--upscale", "2",
          "--superres", str(tmp_path / "sr"), "--steps", "1", "--out", str(out)])
    frames, _ = read_video(out)
    assert frames.shape == (8 + 7 * 3, 3, 128, 128)
