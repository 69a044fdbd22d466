"""MagicVideo's directed temporal attention (minimagic/temporal_attention.py)."""

import pytest
import torch
from einops import rearrange

import minimagic.temporal_attention as ta
from minimagic.temporal_attention import DirectedTemporalAttention, causal_mask


def make(directed: bool = True, frame_pos_embed: bool = True, seed: int = 0) -> DirectedTemporalAttention:
    """A layer whose zero-initialised output projection is randomised, so the branch is non-zero."""
    torch.manual_seed(seed)
    layer = DirectedTemporalAttention(
        8, num_heads=2, max_frames=6, directed=directed, frame_pos_embed=frame_pos_embed
    )
    with torch.no_grad():
        layer.to_out.weight.normal_(0, 0.3)
        layer.to_out.bias.normal_(0, 0.3)
    return layer


def clip(frames: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, frames, 8, 3, 4, generator=torch.Generator().manual_seed(seed))  # (B, F, C, H, W)


def test_zero_at_init_and_not_after_one_step():
    torch.manual_seed(0)
    layer = DirectedTemporalAttention(8, num_heads=2, max_frames=6)
    z = clip()
    assert layer(z).abs().max() == 0
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    loss = (layer(z) - z).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert layer(z).abs().max() > 1e-3


def test_mask_reaches_the_kernel_frame_0_sees_only_itself():
    layer, z = make(), clip()
    with torch.no_grad():
        out, alone = layer(z), layer(z[:, :1])  # frame 0 attending to itself only
    torch.testing.assert_close(out[:, :1], alone, atol=1e-6, rtol=0)
    with torch.no_grad():
        out_bi = make(directed=False)(z)
    assert (out_bi[:, :1] - alone).abs().max() > 1e-3  # the bidirectional layer does look ahead


def changes_from_the_future(directed: bool, k: int = 2) -> torch.Tensor:
    """|T-Attn(z) - T-Attn(z')| where z' differs from z only in frames k, k+1, ..."""
    layer, z = make(directed), clip()
    later = z.clone()
    later[:, k:] += torch.randn(later[:, k:].shape)
    with torch.no_grad():
        diff = (layer(z) - layer(later)).abs()
    assert diff[:, k:].max() > 1e-3  # the changed frames themselves do change
    return diff


def test_future_frames_never_change_the_past():
    assert changes_from_the_future(directed=True)[:, :2].max() < 1e-6


def test_bidirectional_attention_lets_future_frames_change_the_past():
    assert changes_from_the_future(directed=False)[:, :2].max() > 1e-3


@pytest.mark.parametrize("directed", [True, False])
def test_fused_forward_matches_explicit_attention_weights(directed):
    layer, z = make(directed), clip()
    with torch.no_grad():
        weights = layer.attention_weights(z)  # (B, H, W, heads, F, F)
        _, _, v = layer._qkv(z)  # ((B*H*W), heads, F, d)
        ref = rearrange(weights, "b h w n f g -> (b h w) n f g") @ v
        ref = rearrange(
            layer.to_out(rearrange(ref, "n h f d -> n f (h d)")), "(b h w) f c -> b f c h w", b=2, h=3
        )
        torch.testing.assert_close(layer(z), ref, atol=1e-5, rtol=1e-5)


def test_attention_weights_are_lower_triangular_rows_sum_to_one():
    layer, z = make(), clip()
    with torch.no_grad():
        weights = layer.attention_weights(z)
        weights_bi = make(directed=False).attention_weights(z)
    assert weights.shape == (2, 3, 4, 2, 5, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 4, 2, 5))
    assert weights[..., ~causal_mask(5)].abs().max() == 0  # nothing above the diagonal
    assert (weights[..., 0, 0] == 1).all()  # the first frame only sees itself
    assert weights_bi[..., ~causal_mask(5)].min() > 0
    assert torch.equal(causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]]).bool())


def test_frame_position_embedding_breaks_permutation_symmetry():
    z, perm = clip(), torch.tensor([4, 2, 0, 1, 3])
    with torch.no_grad():
        no_pos = make(directed=False, frame_pos_embed=False)
        torch.testing.assert_close(no_pos(z[:, perm]), no_pos(z)[:, perm], atol=1e-6, rtol=0)
        with_pos = make(directed=False, frame_pos_embed=True)
        assert (with_pos(z[:, perm]) - with_pos(z)[:, perm]).abs().max() > 1e-3


def test_batch_chunking_matches_one_kernel_call(monkeypatch):
    layer, z = make(), clip()
    with torch.no_grad():
        whole = layer(z)
        monkeypatch.setattr(ta, "MAX_KERNEL_BATCH", 5)  # 24 token sequences -> 5 chunks
        torch.testing.assert_close(layer(z), whole, atol=1e-6, rtol=0)


def test_errors():
    layer = make()
    with pytest.raises(ValueError, match="at most 6"):
        layer(clip(frames=7))
    with pytest.raises(ValueError, match="expected z"):
        layer(torch.randn(2, 5, 4, 3, 3))  # wrong channels
    with pytest.raises(ValueError, match="divisible"):
        DirectedTemporalAttention(10, num_heads=4, max_frames=6)
    with pytest.raises(ValueError):
        DirectedTemporalAttention(8, num_heads=2, max_frames=0)
