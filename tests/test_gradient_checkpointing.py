"""Gradient checkpointing of the U-Net blocks: the same gradients, the blocks really recomputed, image and video."""

import dataclasses

import pytest
import torch

from minimagic.unet import ResBlock, UNet2D, UNetConfig
from minimagic.video_unet import VideoUNet, VideoUNetConfig


def make(video: bool, checkpointing: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    unet = UNetConfig.preset("tiny", context_dim=8, gradient_checkpointing=checkpointing)
    model = VideoUNet(VideoUNetConfig(unet=unet, num_frames=3)) if video else UNet2D(unet)
    for p in model.parameters():  # non-zero everywhere (zero-init layers would hide gradients)
        p.data.add_(0.05 * torch.randn_like(p))
    return model


def loss_and_gradients(model: torch.nn.Module, video: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn((2, 3, 4, 8, 8) if video else (2, 4, 8, 8), generator=generator)
    context = torch.randn(2, 5, 8, generator=generator)
    t, extra = torch.tensor([3, 800]), {"fps": 8.0} if video else {}
    loss = model(x, t, context, **extra).square().mean()
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("video", [False, True])
def test_checkpointing_leaves_loss_and_gradients_unchanged(video):
    plain, checkpointed = make(video, False), make(video, True)
    loss, gradients = loss_and_gradients(plain, video)
    loss_c, gradients_c = loss_and_gradients(checkpointed, video)
    torch.testing.assert_close(loss_c, loss)
    assert gradients.keys() == gradients_c.keys()
    for name, grad in gradients.items():
        torch.testing.assert_close(gradients_c[name], grad, atol=1e-6, rtol=1e-5, msg=name)
    assert sum(g.abs().sum() for g in gradients.values()) > 0


@pytest.mark.parametrize("video", [False, True])
def test_checkpointed_blocks_run_again_in_backward_only_when_training(video):
    """The flag reaches the blocks, also inside the VideoUNet: every ResBlock runs twice per training step
    (forward, then recomputed in backward), and once without gradients (sampling)."""
    calls = []
    for checkpointing, runs in ((False, 1), (True, 2)):
        model = make(video, checkpointing)
        blocks = [m for m in model.modules() if isinstance(m, ResBlock)]
        for block in blocks:
            block.register_forward_pre_hook(lambda *_: calls.append(1))  # at its start
        calls.clear()
        loss_and_gradients(model, video)
        assert len(calls) == runs * len(blocks)
    calls.clear()
    with torch.no_grad():
        model(torch.randn(1, 3, 4, 8, 8) if video else torch.randn(1, 4, 8, 8), torch.tensor([5]),
              torch.randn(1, 5, 8), **({"fps": 8.0} if video else {}))
    assert len(calls) == len(blocks)


def test_flag_is_a_config_field_saved_with_the_model():
    config = UNetConfig.preset("tiny", gradient_checkpointing=True)
    assert UNetConfig(**dataclasses.asdict(config)).gradient_checkpointing
    assert not UNetConfig.preset("toy").gradient_checkpointing and UNetConfig.preset("base").gradient_checkpointing
