"""Frame interpolation (minimagic/interpolation.py, stages/interp.py): keyframes kept, shapes, errors, init."""

import json
from dataclasses import replace

import pytest
import torch
from conftest import randomize_

from minimagic.__main__ import main
from minimagic.interpolation import FrameInterpolator
from minimagic.paths import CHECKPOINTS
from minimagic.pipeline_folder import save_pipeline
from minimagic.stages import InterpolationStage
from minimagic.text import TextEncoder
from minimagic.unet import UNet2D, UNetConfig
from minimagic.vae import VAE, VAEConfig
from minimagic.video_unet import VideoUNet


def keyframe_model(temporal_attention: str = "directed", seed: int = 0) -> VideoUNet:
    """A tiny text-to-video U-Net with random, non-zero weights everywhere."""
    torch.manual_seed(seed)
    unet = VideoUNet.from_unet2d(UNet2D(UNetConfig.preset("tiny")), 5, temporal_attention=temporal_attention)
    randomize_(unet, seed)
    return unet


def interpolator(seed: int = 0) -> FrameInterpolator:
    model = FrameInterpolator.from_keyframe_model(keyframe_model(seed=seed))
    randomize_(model, seed + 1)  # the widened input channels too
    return model.eval()


def latents(batch: int = 2, frames: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 4, 8, 8, generator=g), torch.randn(batch, 5, 384, generator=g)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_keyframes_are_reproduced_and_shapes_follow_k(k):
    model = interpolator()
    keyframes, context = latents()
    out = model.interpolate(keyframes, k, context, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, k + 2, 4, 8, 8)
    assert torch.equal(out[:, 0], keyframes[:, 0]) and torch.equal(out[:, -1], keyframes[:, 1])
    assert not torch.allclose(out[:, 1], keyframes[:, 0])  # the in-between frames are generated


def test_interpolate_video_puts_k_frames_into_every_gap():
    model, k = interpolator(), 2
    video, context = latents(frames=3)
    out = model.interpolate_video(video, k, context, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3 + 2 * k, 4, 8, 8)  # F + (F - 1) k
    for i in range(3):
        assert torch.equal(out[:, i * (k + 1)], video[:, i])  # keyframe i sits at i (k + 1)


def test_clear_errors_for_bad_k_and_too_few_keyframes():
    model = interpolator()
    keyframes, context = latents()
    with pytest.raises(ValueError, match="fills 1 to 3 frames"):
        model.interpolate(keyframes, 0, context, num_inference_steps=1)
    with pytest.raises(ValueError, match="fills 1 to 3 frames"):
        model.interpolate(keyframes, 4, context, num_inference_steps=1)
    with pytest.raises(ValueError, match="two latent frames"):
        model.interpolate(keyframes[:, :1], 2, context, num_inference_steps=1)
    with pytest.raises(ValueError, match="two or more keyframes"):
        model.interpolate_video(keyframes[:, :1], 2, context, num_inference_steps=1)
    with pytest.raises(ValueError, match="bidirectional"):
        FrameInterpolator(VideoUNet(replace(model.unet.config, temporal_attention="directed")))  # causal


@torch.no_grad()
def test_starts_as_the_keyframe_model_with_clean_keyframes():
    """Widened with zero weights, the interpolator at init is the keyframe model run on z_t whose keyframes
    are replaced by their clean latents: the conditioning channels add nothing yet."""
    keyframe = keyframe_model("bidirectional")
    model = FrameInterpolator.from_keyframe_model(keyframe)
    x, context = latents(frames=5)
    t, fps = torch.tensor([10, 900]), torch.tensor([32.0, 32.0])
    keyframes = torch.randn(2, 2, 4, 8, 8)
    known, mask = model.conditioning(keyframes, 3)
    clean = torch.cat([keyframes[:, :1], x[:, 1:-1], keyframes[:, 1:]], dim=1)  # (B, 5, c, h, w)
    torch.testing.assert_close(model(x, t, context, known, mask, fps), keyframe(clean, t, context, fps=fps))


@torch.no_grad()
def test_in_between_frames_see_both_keyframes():
    model = interpolator()
    x, context = latents(frames=5)
    t, fps = torch.tensor([10, 900]), torch.tensor([32.0, 32.0])
    keyframes = torch.randn(2, 2, 4, 8, 8)
    known, mask = model.conditioning(keyframes, 3)
    moved, _ = model.conditioning(torch.stack([keyframes[:, 0], keyframes[:, 1] + 1], dim=1), 3)
    before, after = model(x, t, context, known, mask, fps), model(x, t, context, moved, mask, fps)
    assert (before[:, 1] - after[:, 1]).abs().max() > 1e-4  # frame 1 depends on the last keyframe


def test_loss_trains_only_the_in_between_frames():
    """The gradient reaches the network's eps of the in-between frames and never that of the keyframes."""
    model = interpolator()
    x0, context = latents(frames=4)
    outputs = []

    def keep(module, inputs, output):
        output.retain_grad()
        outputs.append(output)

    model.unet.register_forward_hook(keep)
    loss = model.loss(x0, context, torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    grad = outputs[0].grad  # (B, k + 2, c, h, w): d loss / d eps_theta
    assert grad[:, [0, -1]].abs().max() == 0  # the keyframes are given: nothing to learn there
    assert (grad[:, 1:-1].flatten(2).abs().amax(-1) > 0).all()  # every in-between frame of every clip learns
    assert model.unet.unet.conv_in.conv.weight.grad[:, 4:].abs().sum() > 0  # the new conditioning channels learn


def test_save_load_round_trip(tmp_path):
    model = interpolator()
    save_pipeline(tmp_path / "interp", "interp", model, {"video_unet": model.unet.config_dict(),
                  "max_between": model.max_between}, model.diffusion, TextEncoder(), VAE(VAEConfig.preset("tiny")),
                  64, step=1)
    loaded = FrameInterpolator.from_pretrained(tmp_path / "interp")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value.half().float())
    with pytest.raises(ValueError, match="expected a 'interp' checkpoint"):
        FrameInterpolator.from_pretrained(CHECKPOINTS / "t2v-moving-digits")


def test_train_interp_and_evaluate_through_the_cli(tmp_path, capsys):
    """One training step from the shipped t2v model, then the evaluation's table for both keyframe gaps."""
    out = tmp_path / "interp"
    main(["train", "interp", "--preset", "toy", "--steps", "1", "--batch-size", "2", "--preview-every", "1",
          "--run-dir", str(tmp_path / "run"), "--out", str(out)])
    meta = json.loads((out / "config.json").read_text())
    assert meta["stage"] == "interp" and (out / "vae" / "config.json").is_file()
    assert (tmp_path / "run" / "preview_000001.png").is_file()
    main(["evaluate", "--checkpoint", str(out), "--num-videos", "2", "--out", str(tmp_path / "eval")])
    results = json.loads((tmp_path / "eval.json").read_text())
    for gap in ("gap 3 px", "gap 12 px"):
        assert set(results[gap]) >= {"interpolated_psnr_db", "blend_psnr_db", "interpolated_centroid_error_px"}
    stage, saved = InterpolationStage(init=out), FrameInterpolator.from_pretrained(out)  # --init out: train further
    assert stage.max_between == saved.max_between == 3
    assert all(torch.equal(value, stage.model.state_dict()[name]) for name, value in saved.state_dict().items())
    main(["train", "interp", "--init", str(out), "--steps", "1", "--batch-size", "2", "--preview-every", "5",
          "--run-dir", str(tmp_path / "more"), "--out", str(tmp_path / "more" / "checkpoint")])
    assert FrameInterpolator.from_pretrained(tmp_path / "more" / "checkpoint").max_between == 3
    with pytest.raises(SystemExit):
        main(["train", "interp", "--init", str(CHECKPOINTS / "t2i-moving-digits"), "--steps", "1"])
    assert "text-to-image model" in capsys.readouterr().err
