"""Spurious strokes: the largest blob is the digit, ink apart from it counts, real clips score zero."""

import pytest
import torch

from minimagic.data import MovingDigits
from minimagic.strokes import connected_blobs, digit_mask, spurious_strokes


def blobs_video() -> torch.Tensor:
    """One frame (1, 1, 1, 20, 20): a 5x5 'digit', a 2x2 blob far from it, and a diagonal touching the digit."""
    video = -torch.ones(1, 1, 1, 20, 20)
    video[..., 2:7, 2:7] = 1  # the digit: 25 pixels
    video[..., 15:17, 15:17] = 1  # a stray blob: 4 pixels
    video[..., 7, 7] = 1  # touches the digit's corner: 8-connected, part of it
    return video


def test_connected_blobs_and_the_digit():
    ink = blobs_video()[0, 0] > 0  # (1, 20, 20)
    labels = connected_blobs(ink)
    assert labels[0, 2, 2] == labels[0, 7, 7] != labels[0, 15, 15]  # diagonal neighbours join, far blobs do not
    assert labels.unique().numel() == 3  # background, digit, blob
    digit = digit_mask(ink)
    assert digit.sum() == 26 and not digit[0, 15, 15]


def test_a_frame_with_an_added_blob_scores_higher():
    video = blobs_video()
    assert spurious_strokes(video)[0, 0].item() == pytest.approx(4 / 30)
    video[..., 15:17, 15:17] = -1  # remove the blob
    assert spurious_strokes(video)[0, 0].item() == 0.0
    video[..., 9, 9] = 1  # 2 px from the digit's corner pixel: within the margin, not spurious
    assert spurious_strokes(video, margin=3)[0, 0].item() == 0.0
    assert spurious_strokes(video, margin=1)[0, 0].item() == pytest.approx(1 / 27)


def test_real_clips_have_almost_no_spurious_strokes():
    data = MovingDigits("test", length=20)
    video = torch.stack([data[i]["video"] for i in range(20)])  # (20, 8, 1, 64, 64)
    clean = spurious_strokes(video)
    assert clean.shape == (20, 8) and clean.max() == 0  # every real digit is one blob at the threshold
    blotted = video.clone()
    blotted[..., :6, :6] = 1  # a bright corner blob in every frame (digits never touch the corner this much)
    assert spurious_strokes(blotted).mean() > clean.mean() + 0.1
    assert spurious_strokes(-torch.ones(1, 2, 1, 8, 8)).sum() == 0  # no ink, nothing spurious


def test_spurious_strokes_rejects_bad_input():
    with pytest.raises(ValueError, match="one-channel video"):
        spurious_strokes(torch.zeros(2, 8, 3, 16, 16))
    with pytest.raises(ValueError, match="margin"):
        spurious_strokes(torch.zeros(1, 2, 1, 8, 8), margin=-1)
    with pytest.raises(ValueError, match="boolean masks"):
        connected_blobs(torch.zeros(1, 8, 8))


@torch.no_grad()
def test_evaluate_videovae_scores_spurious_strokes_of_generated_clips(tmp_path):
    from minimagic.evaluate import evaluate_videovae
    from minimagic.paths import CHECKPOINTS
    from minimagic.pipeline import TextToVideoPipeline
    from minimagic.text import TextEncoder
    from minimagic.unet import UNet2D, UNetConfig
    from minimagic.vae import VAE
    from minimagic.video_unet import VideoUNet
    from minimagic.videovae import VideoVAE

    torch.manual_seed(0)
    vae, text = VAE.from_pretrained(CHECKPOINTS / "vae-moving-digits"), TextEncoder()
    VideoVAE.from_vae(vae).save_pretrained(tmp_path / "videovae", command="test")
    unet = UNet2D(UNetConfig.preset("tiny", context_dim=text.dim))
    TextToVideoPipeline(VideoUNet.from_unet2d(unet, 8), vae, text, image_size=64).save_pretrained(tmp_path / "t2v")
    row = evaluate_videovae(tmp_path / "videovae", num_videos=2, steps=2, t2v=tmp_path / "t2v")
    for name in ("vae", "videovae", "videovae_no_temporal", "videovae_single_frames"):
        assert 0 <= row[f"generated_{name}_spurious_strokes"] <= 1
    assert row["generated_vae_spurious_strokes"] == row["generated_videovae_spurious_strokes"]  # identical at init
