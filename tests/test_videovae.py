"""VideoVAE: identity at init, causal temporal layers, frozen encoder, round trip, errors."""

import pytest
import torch

from minimagic.stages import VAEStage, VideoVAEStage
from minimagic.train import TrainConfig, train
from minimagic.vae import VAE, VAEConfig
from minimagic.videovae import VideoVAE


@pytest.fixture
def vae():
    torch.manual_seed(0)
    return VAE(VAEConfig.preset("tiny", scale_factor=0.8)).eval()


def randomise(module: torch.nn.Module) -> None:
    for p in module.parameters():
        p.data.add_(0.3 * torch.randn_like(p))


def test_identity_at_init(vae):
    video_vae = VideoVAE.from_vae(vae, num_frames=4)
    latents = torch.randn(2, 4, 4, 8, 8)
    with torch.no_grad():
        assert torch.allclose(video_vae.decode_video(latents), vae.decode_video(latents), atol=1e-6)
        video = torch.rand(1, 3, 1, 16, 16) * 2 - 1
        assert torch.equal(video_vae.encode_video(video), vae.encode_video(video))


def test_decoder_is_causal_and_its_temporal_layers_matter(vae):
    video_vae = VideoVAE.from_vae(vae, num_frames=6)
    randomise(video_vae.temporal)
    latents = torch.randn(1, 6, 4, 8, 8)
    changed = latents.clone()
    changed[:, 3:] += torch.randn_like(changed[:, 3:])
    with torch.no_grad():
        a, b = video_vae.decode_video(latents), video_vae.decode_video(changed)
        assert torch.allclose(a[:, :3], b[:, :3], atol=1e-6)  # frames 0..2 never see frames 3..5
        assert not torch.allclose(a[:, 3:], b[:, 3:])
        assert not torch.allclose(a, vae.decode_video(latents), atol=1e-3)  # the temporal branch is live
        bidirectional = VideoVAE.from_vae(vae, num_frames=6, directed=False)
        bidirectional.load_state_dict(video_vae.state_dict())
        a, b = bidirectional.decode_video(latents), bidirectional.decode_video(changed)
        assert not torch.allclose(a[:, :3], b[:, :3], atol=1e-6)


@pytest.mark.parametrize("frames", [1, 3, 6])
def test_shapes(vae, frames):
    video_vae = VideoVAE.from_vae(vae, num_frames=6)
    with torch.no_grad():
        assert video_vae.decode_video(torch.randn(2, frames, 4, 8, 8)).shape == (2, frames, 1, 16, 16)


def test_bad_shapes_are_refused(vae):
    video_vae = VideoVAE.from_vae(vae, num_frames=4)
    with pytest.raises(ValueError, match="at most 4 frames"):
        video_vae.decode_video(torch.randn(1, 5, 4, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, F, 4, h, w\)"):
        video_vae.decode_video(torch.randn(1, 4, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, F, 4, h, w\)"):
        video_vae.decode_video(torch.randn(4, 4, 8, 8))


@pytest.mark.parametrize("temporal_only", [False, True])
def test_stage_trains_the_decoder_and_leaves_the_encoder_frozen(tmp_path, temporal_only):
    stage = VAEStage(preset="tiny")
    stage.save(stage.model, tmp_path / "vae", command="test", num_frames=16)
    videovae_stage = VideoVAEStage(init=tmp_path / "vae", num_clips=4, temporal_only=temporal_only)
    model = videovae_stage.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train(videovae_stage, TrainConfig(steps=2, batch_size=2, warmup=1, preview_every=2), tmp_path / "run")
    after = dict(model.named_parameters())
    encoder = [name for name in before if name.startswith(("vae.encoder.", "vae.quant_conv."))]
    assert encoder and all(torch.equal(before[name], after[name]) for name in encoder)
    decoder = [name for name in before if name.startswith("vae.decoder.")]
    assert any(not torch.equal(before[name], after[name]) for name in decoder) != temporal_only  # frozen if asked
    assert any(not torch.equal(before[name], after[name]) for name in before if name.startswith("temporal."))


def test_save_load_round_trip(vae, tmp_path):
    video_vae = VideoVAE.from_vae(vae, num_frames=4)
    randomise(video_vae.temporal)
    video_vae.save_pretrained(tmp_path / "videovae", command="test")
    loaded = VideoVAE.from_pretrained(tmp_path / "videovae")
    assert loaded.config == video_vae.config
    latents = torch.randn(1, 4, 4, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.decode_video(latents), video_vae.decode_video(latents))
    with pytest.raises(ValueError, match="expected a 'vae' checkpoint"):
        VAE.from_pretrained(tmp_path / "videovae")


def test_stage_latent_noise_differs_from_frame_to_frame(tmp_path):
    stage = VAEStage(preset="tiny")
    stage.save(stage.model, tmp_path / "vae", command="test", num_frames=16)
    seen = []
    for latent_noise in (0.0, 0.5):
        videovae_stage = VideoVAEStage(init=tmp_path / "vae", num_clips=4, latent_noise=latent_noise)
        batch = videovae_stage.batch(2, torch.Generator().manual_seed(0))
        model = videovae_stage.model
        model.decode_video = lambda z, decode=model.decode_video: seen.append(z) or decode(z)
        videovae_stage.loss(model, batch, torch.Generator().manual_seed(1))
        seen[-1] = seen[-1] - batch["latents"]  # (2, F, c, h, w): the noise added
    assert torch.equal(seen[0], torch.zeros_like(seen[0]))  # no noise unless asked for
    noise = seen[1]
    assert noise.abs().mean() > 0.01 and noise.std(dim=1).mean() > 0.01  # added, and not the same in every frame
    assert noise.abs().max() < 0.5 * 6  # within a few std of the largest scale
    with pytest.raises(ValueError, match="latent_noise must be >= 0"):
        VideoVAEStage(init=tmp_path / "vae", num_clips=4, latent_noise=-0.1)


def test_clamped_loss_leaves_black_below_minus_one_free(tmp_path):
    stage = VAEStage(preset="tiny")
    stage.save(stage.model, tmp_path / "vae", command="test", num_frames=16)
    losses = []
    for clamped_loss in (False, True):
        videovae_stage = VideoVAEStage(init=tmp_path / "vae", num_clips=4, clamped_loss=clamped_loss)
        batch = videovae_stage.batch(2, torch.Generator().manual_seed(0))
        model = videovae_stage.model
        black = batch["video"] == -1  # (B, F, C, H, W)
        assert black.float().mean() > 0.5  # a digit on black
        model.decode_video = lambda z, video=batch["video"], black=black: torch.where(black, -1.5, video)
        losses.append(videovae_stage.loss(model, batch, torch.Generator().manual_seed(1)).item())
    assert losses[0] > 0.1  # black decoded as -1.5 is off by 0.5 ...
    assert losses[1] == 0.0  # ... but shown as -1 after the clamp, which is all the clamped loss sees


def test_stage_trains_a_videovae_further(vae, tmp_path):
    video_vae = VideoVAE.from_vae(vae, num_frames=8)
    randomise(video_vae.temporal)
    video_vae.save_pretrained(tmp_path / "videovae", command="test")
    stage = VideoVAEStage(init=tmp_path / "videovae", num_clips=4)
    saved = video_vae.state_dict()
    assert all(torch.equal(saved[name], value) for name, value in stage.model.state_dict().items())
    assert not any(p.requires_grad for p in stage.model.vae.encoder.parameters())
    with pytest.raises(ValueError, match="architecture is fixed, drop \\['directed'\\]"):
        VideoVAEStage(init=tmp_path / "videovae", num_clips=4, directed=False)


def test_frames_alone_see_no_other_frame(vae, load_script, tmp_path):
    """decode_frames_alone (evaluate's ablation, bench/videovae_context.py): with the temporal layers at zero (init)
    a clip decoded whole equals its frames decoded alone; with them active the two differ, in the last frame too,
    so 'alone' really drops the context."""
    bench = load_script("bench/videovae_context.py")
    model = VideoVAE.from_vae(vae)
    latents = torch.randn(2, 8, vae.config.latent_channels, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.decode_video(latents), model.decode_frames_alone(latents))
        for layer in model.temporal.values():
            torch.nn.init.normal_(layer.to_out.weight, std=0.5)
        whole, alone = model.decode_video(latents), model.decode_frames_alone(latents)
    assert torch.equal(whole[:, 0], alone[:, 0])  # frame 0 sees only itself either way (directed)
    assert (whole[:, -1] - alone[:, -1]).abs().max() > 1e-3
    rows = bench.main(["--quick", "--noise", "0", "1", "--md", str(tmp_path / "c.md")])
    assert [(r["motion"], r["noise"]) for r in rows] == [("moving", 0.0), ("moving", 1.0), ("still", 0.0),
                                                         ("still", 1.0)]
    assert all(r[key] > 0 for r in rows for key in ("mse_whole", "mse_alone", "last_frame_whole"))
    assert "| tiny random | still | 1.0 |" in (tmp_path / "c.md").read_text()
