"""The inflated video U-Net (minimagic/video_unet.py): identity at init, causality, shapes, bookkeeping."""

import json

import pytest
import torch
from conftest import randomize_
from torch import nn

from minimagic.adaptor import AdaptedConv2d
from minimagic.unet import UNet2D, UNetConfig
from minimagic.video_unet import SpatioTemporalBlock, VideoUNet, VideoUNetConfig


def random_unet2d(seed: int = 0) -> UNet2D:
    torch.manual_seed(seed)
    unet = UNet2D(UNetConfig.preset("tiny"))
    randomize_(unet, seed)
    assert all((p != 0).all() for p in unet.parameters())
    return unet


def inputs(frames: int = 4, batch: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, frames, 4, 8, 8, generator=g)  # (B, F, c, h, w) latents
    t = torch.randint(0, 1000, (batch,), generator=g)
    context = torch.randn(batch, 5, 384, generator=g)
    return x, t, context


@pytest.mark.parametrize("placement", ["parallel", "sequential"])
def test_identity_at_init_equals_the_image_model_frame_by_frame(placement):
    unet = random_unet2d()
    video = VideoUNet.from_unet2d(unet, 8, temporal_placement=placement)
    x, t, context = inputs()
    with torch.no_grad():
        out = video(x, t, context, fps=torch.tensor([4.0, 12.0]))
        per_frame = torch.stack([unet(x[:, i], t, context) for i in range(x.shape[1])], dim=1)
    torch.testing.assert_close(out, per_frame, atol=1e-5, rtol=0)
    assert per_frame.abs().max() > 1e-2  # a real comparison, not 0 == 0


def test_from_unet2d_copies_the_image_model():
    unet = random_unet2d()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    video = VideoUNet.from_unet2d(unet, 8)
    with torch.no_grad():
        for p in video.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())
    assert not any(isinstance(m, AdaptedConv2d) for m in unet.modules())
    with pytest.raises(ValueError, match="already inflated"):
        VideoUNet(video.config, unet=video.unet)


@pytest.mark.parametrize(
    "options, causal",
    [
        (dict(), True),
        (dict(temporal_placement="sequential"), True),
        (dict(frame_pos_embed=False), True),
        (dict(temporal_attention="bidirectional"), False),
    ],
)
def test_whole_model_is_causal_over_frames(options, causal):
    video = VideoUNet.from_unet2d(random_unet2d(), 8, **options)
    randomize_(video, seed=3, scale=0.2)  # temporal out-projections, FPS MLP and adaptors included
    x, t, context = inputs(frames=6)
    k = 3
    later = x.clone()
    later[:, k:] += torch.randn(later[:, k:].shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        diff = (video(x, t, context, fps=8.0) - video(later, t, context, fps=8.0)).abs()
    assert diff[:, k:].max() > 1e-3
    if causal:
        assert diff[:, :k].max() < 1e-5
    else:
        assert diff[:, :k].max() > 1e-3  # the bidirectional model lets the future leak: the test can fail


@pytest.mark.parametrize("frames", [1, 3, 8])
def test_shapes_for_several_frame_counts(frames):
    video = VideoUNet(VideoUNetConfig.preset("tiny"))  # from scratch
    x, t, context = inputs(frames=frames)
    assert video(x, t, context, fps=8.0).shape == x.shape


def test_forward_errors():
    video = VideoUNet(VideoUNetConfig.preset("tiny"))
    x, t, context = inputs()
    with pytest.raises(ValueError, match="1 <= F <= 8"):
        video(torch.randn(1, 9, 4, 8, 8), t[:1], context[:1], fps=8.0)
    with pytest.raises(ValueError, match="x must be"):
        video(torch.randn(2, 4, 3, 8, 8), t, context, fps=8.0)  # wrong latent channels
    with pytest.raises(ValueError, match="x must be"):
        video(x[:, 0], t, context, fps=8.0)  # an image batch, not a clip
    with pytest.raises(ValueError, match="context must be"):
        video(x, t, torch.randn(2, 5, 768), fps=8.0)  # wrong context dim
    with pytest.raises(ValueError, match="context"):
        video(x, t, context[:1], fps=8.0)
    with pytest.raises(ValueError, match="t must be"):
        video(x, t[:1], context, fps=8.0)
    with pytest.raises(ValueError, match="fps must be a number"):
        video(x, t, context, fps=torch.tensor([8.0, 8.0, 8.0]))  # fps batch mismatch
    with pytest.raises(ValueError, match="fps must be given"):
        video(x, t, context)
    no_fps = VideoUNet(VideoUNetConfig.preset("tiny", fps_conditioning=False))
    with pytest.raises(ValueError, match="fps must be given"):
        no_fps(x, t, context, fps=8.0)


def test_fps_reaches_the_model():
    video = VideoUNet(VideoUNetConfig.preset("tiny"))
    randomize_(video)
    x, t, context = inputs()
    with torch.no_grad():
        assert (video(x, t, context, fps=4.0) - video(x, t, context, fps=24.0)).abs().max() > 1e-4
        torch.testing.assert_close(
            video(x, t, context, fps=4.0), video(x, t, context, fps=torch.tensor([4.0, 4.0]))
        )


def test_config_validation():
    for bad in (dict(temporal_attention="sideways"), dict(temporal_placement="diagonal"), dict(num_frames=0)):
        with pytest.raises(ValueError):
            VideoUNetConfig.preset("tiny", **bad)
    with pytest.raises(ValueError, match="unknown VideoUNetConfig fields"):
        VideoUNetConfig.preset("tiny", frames=8)
    assert VideoUNetConfig.preset("base").num_frames == 16


def test_parameter_counts_add_up_and_freeze_2d_freezes_exactly_the_reused_weights():
    unet = random_unet2d()
    video = VideoUNet.from_unet2d(unet, 8)
    counts = video.parameter_counts()
    assert counts["reused"] == sum(p.numel() for p in unet.parameters())
    assert counts["reused"] + counts["new"] == counts["total"] == sum(p.numel() for p in video.parameters())
    assert counts["new"] == counts["adaptor"] + counts["temporal"] + counts["fps"]
    convs = [m for m in unet.modules() if isinstance(m, nn.Conv2d)]
    assert counts["adaptor"] == 2 * 8 * sum(c.out_channels for c in convs)  # S and B: (F, C_out) each
    assert counts["temporal"] > 0 and counts["fps"] > 0
    video.freeze_2d()
    frozen = sum(p.numel() for p in video.parameters() if not p.requires_grad)
    assert frozen == counts["reused"]
    x, t, context = inputs()
    video(x, t, context, fps=8.0).pow(2).mean().backward()
    groups = video.parameter_groups()
    assert all(p.grad is None for p in groups["reused"])
    for name in ("adaptor", "temporal", "fps"):  # zero-initialised outputs still receive gradients
        assert any(p.grad is not None and p.grad.abs().max() > 0 for p in groups[name]), name
    video.freeze_2d(False)
    assert all(p.requires_grad for p in video.parameters())


def test_ablation_switches():
    video = VideoUNet(
        VideoUNetConfig.preset("tiny", use_adaptor=False, temporal_attention="none", fps_conditioning=False)
    )
    assert not any(isinstance(m, (AdaptedConv2d, SpatioTemporalBlock)) for m in video.modules())
    assert video.parameter_counts()["new"] == 0
    blocks = [
        m for m in VideoUNet(VideoUNetConfig.preset("tiny")).modules() if isinstance(m, SpatioTemporalBlock)
    ]
    assert len(blocks) == 4  # every SpatialTransformer got a temporal branch
    x, t, context = inputs()
    assert video(x, t, context).shape == x.shape


def test_config_dict_round_trip_rebuilds_the_same_model():
    video = VideoUNet(VideoUNetConfig.preset("tiny", num_frames=6, temporal_placement="sequential"))
    randomize_(video)
    config = json.loads(json.dumps(video.config_dict()))  # as stored next to a checkpoint
    rebuilt = VideoUNet.from_config_dict(config)
    rebuilt.load_state_dict(video.state_dict())
    assert (
        rebuilt.config == video.config
        and rebuilt.num_frames == 6
        and rebuilt.unet_config == video.unet_config
    )
    x, t, context = inputs()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, t, context, fps=8.0), video(x, t, context, fps=8.0))
