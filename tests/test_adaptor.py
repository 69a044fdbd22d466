"""MagicVideo's frame-wise adaptor z_i = S_i * conv(z_i) + B_i (minimagic/adaptor.py)."""

import pytest
import torch
from torch import nn

from minimagic.adaptor import AdaptedConv2d, FrameAdaptor, FrameContext, add_frame_adaptors
from minimagic.unet import UNet2D, UNetConfig


def test_frame_adaptor_is_identity_at_init_and_not_after_a_step():
    torch.manual_seed(0)
    adaptor = FrameAdaptor(num_frames=4, channels=3)
    z = torch.randn(2, 4, 3, 5, 5)
    torch.testing.assert_close(adaptor(z), z, atol=0, rtol=0)
    opt = torch.optim.SGD(adaptor.parameters(), lr=0.1)
    loss = (adaptor(z) - 2 * z - 1).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert (adaptor(z) - z).abs().max() > 1e-3
    assert not torch.allclose(adaptor.scale[0], adaptor.scale[1])  # each frame has its own S_i


def test_frame_adaptor_uses_row_i_for_frame_i_and_first_rows_for_short_clips():
    adaptor = FrameAdaptor(num_frames=4, channels=2)
    with torch.no_grad():
        adaptor.scale.copy_(torch.arange(1.0, 5.0)[:, None].expand(4, 2))  # S_i = i + 1
        adaptor.shift.fill_(0.5)
    z = torch.randn(3, 3, 2, 4, 4)  # F = 3 < num_frames
    out = adaptor(z)
    for i in range(3):
        torch.testing.assert_close(out[:, i], (i + 1) * z[:, i] + 0.5)


def test_frame_adaptor_errors():
    adaptor = FrameAdaptor(num_frames=4, channels=3)
    with pytest.raises(ValueError, match="4 frames"):
        adaptor(torch.randn(1, 5, 3, 2, 2))  # F > num_frames
    with pytest.raises(ValueError, match="channels"):
        adaptor(torch.randn(1, 2, 6, 2, 2))
    with pytest.raises(ValueError, match=r"\(B, F, C, H, W\)"):
        adaptor(torch.randn(2, 3, 2, 2))
    with pytest.raises(ValueError):
        FrameAdaptor(0, 3)


def test_adapted_conv_unfolds_frames_from_the_shared_context():
    torch.manual_seed(0)
    conv, frames = nn.Conv2d(3, 5, 3, padding=1), FrameContext(num_frames=3)
    adapted = AdaptedConv2d(conv, num_frames=4, frame_context=frames)
    x = torch.randn(2 * 3, 3, 6, 6)  # (B*F, C, H, W) with B=2, F=3
    torch.testing.assert_close(adapted(x), conv(x), atol=0, rtol=0)  # identity adaptor at init
    with torch.no_grad():
        adapted.adaptor.scale[1] = 3.0  # only frame 1
    out = adapted(x).unflatten(0, (2, 3))  # (B, F, C, H, W)
    ref = conv(x).unflatten(0, (2, 3))
    torch.testing.assert_close(out[:, 1], 3 * ref[:, 1])
    torch.testing.assert_close(out[:, [0, 2]], ref[:, [0, 2]])
    frames.num_frames = 4
    with pytest.raises(ValueError, match="not a multiple"):
        adapted(x)  # 6 is not a multiple of F=4


def test_add_frame_adaptors_wraps_every_conv_once():
    unet = UNet2D(UNetConfig.preset("tiny"))
    convs = [m for m in unet.modules() if isinstance(m, nn.Conv2d)]
    frames = FrameContext()
    assert add_frame_adaptors(unet, 8, frames) == len(convs) > 10
    wrappers = [m for m in unet.modules() if isinstance(m, AdaptedConv2d)]
    assert len(wrappers) == len(convs)
    assert {id(w.conv) for w in wrappers} == {id(c) for c in convs}  # the same (pre-trained) conv objects
    assert all(w.frame_context is frames for w in wrappers)
    assert all(w.adaptor.scale.shape == (8, w.conv.out_channels) for w in wrappers)
    assert add_frame_adaptors(unet, 8, frames) == 0  # already wrapped convs are left alone
    with pytest.raises(ValueError):
        add_frame_adaptors(nn.Conv2d(1, 1, 1), 8, frames)
