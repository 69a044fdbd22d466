"""The 2D latent U-Net (minimagic/unet.py) and its spatial transformer, on the tiny preset."""

import pytest
import torch
from conftest import randomize_

from minimagic.spatial_transformer import SpatialTransformer
from minimagic.unet import UNet2D, UNetConfig


def tiny_inputs(batch: int = 2, size: int = 8, length: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, size, size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    context = torch.randn(batch, length, 384, generator=g)
    return x, t, context


def test_tiny_forward_shapes():
    torch.manual_seed(0)
    unet = UNet2D(UNetConfig.preset("tiny"))
    for size in (8, 16):
        x, t, context = tiny_inputs(size=size)
        assert unet(x, t, context).shape == x.shape


def test_presets_and_toy_size():
    toy, base = UNetConfig.preset("toy"), UNetConfig.preset("base")
    assert base.channels == (320, 640, 1280, 1280) and base.context_dim == 768 and base.num_res_blocks == 2
    assert base.time_embed_dim == 1280  # 4 * channels[0], as in Stable Diffusion
    params = sum(p.numel() for p in UNet2D(toy).parameters())
    assert 3e6 <= params <= 5e6, params
    assert UNetConfig.preset("tiny", num_heads=4).num_heads == 4
    with torch.device("meta"):  # shapes only: no memory, no forward
        base_params = sum(p.numel() for p in UNet2D(base).parameters())
    assert base_params == 859_520_964  # the Stable Diffusion v1 U-Net's parameter count


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(channels=()),
        dict(channels=(16, 0), attention_levels=(False, True)),
        dict(num_res_blocks=0),
        dict(attention_levels=(True,)),  # one flag for three levels
        dict(channels=(64, 128, 250)),  # 250 is not divisible by 4 heads
        dict(context_dim=0),
    ],
)
def test_config_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        UNetConfig(**kwargs)


def test_preset_errors():
    with pytest.raises(ValueError, match="unknown UNet preset"):
        UNetConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown UNetConfig fields"):
        UNetConfig.preset("tiny", chanels=(8, 16))


def test_forward_errors():
    unet = UNet2D(UNetConfig.preset("tiny"))
    x, t, context = tiny_inputs()
    with pytest.raises(ValueError, match="x must be"):
        unet(torch.randn(2, 3, 8, 8), t, context)  # wrong channel count
    with pytest.raises(ValueError, match="divisible by 2"):
        unet(torch.randn(2, 4, 7, 7), t, context)
    with pytest.raises(ValueError, match="context must be"):
        unet(x, t, torch.randn(2, 5, 768))  # wrong context dim
    with pytest.raises(ValueError, match="context must be"):
        unet(x, t, context[:1])  # batch mismatch
    with pytest.raises(ValueError, match="t must be"):
        unet(x, t[:1], context)


def test_spatial_transformers_are_one_class_and_convs_are_plain():
    unet = UNet2D(UNetConfig.preset("tiny"))
    blocks = [m for m in unet.modules() if isinstance(m, SpatialTransformer)]
    assert len(blocks) == 4  # level 1: one down and two up, plus the mid block
    assert all(type(m) is torch.nn.Conv2d for m in unet.modules() if isinstance(m, torch.nn.Conv2d))


def test_embed_time_then_forward_features_equals_forward():
    unet = UNet2D(UNetConfig.preset("tiny"))
    randomize_(unet)
    x, t, context = tiny_inputs()
    with torch.no_grad():
        torch.testing.assert_close(unet.forward_features(x, unet.embed_time(t), context), unet(x, t, context))
        assert (unet(x, t + 100, context) - unet(x, t, context)).abs().max() > 1e-4  # t is used


def test_tiny_unet_overfits_one_batch():
    torch.manual_seed(0)
    unet = UNet2D(UNetConfig.preset("tiny"))
    x, t, context = tiny_inputs(batch=4)
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))  # fixed "noise" to regress
    opt = torch.optim.Adam(unet.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):  # it takes ~25 steps; stop as soon as the loss is 10x lower
        loss = torch.nn.functional.mse_loss(unet(x, t, context), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if losses[-1] < losses[0] / 10:
            break
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
