"""SDEdit pairs for the VideoVAE (sdedit.py): shapes, each pair's target is its own real clip, errors; the
videovae stage's --generated-pairs."""

import pytest
import torch

from minimagic.clips import encode_clips
from minimagic.data import MovingDigits
from minimagic.pipeline import TextToVideoPipeline
from minimagic.sdedit import PairSettings, make_pairs
from minimagic.stages import VAEStage, VideoVAEStage
from minimagic.text import TextEncoder
from minimagic.train import TrainConfig, train
from minimagic.unet import UNet2D, UNetConfig
from minimagic.video_unet import VideoUNet

FEW_STEPS = dict(t_low=20, t_high=40, num_steps=50)  # t_s in {20, 40}: one or two DDIM steps


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny VAE and a tiny 8-frame t2v model that works in its latent space."""
    root = tmp_path_factory.mktemp("pairs")
    torch.manual_seed(0)
    stage = VAEStage(preset="tiny")
    stage.save(stage.model, root / "vae", command="test", num_frames=16)
    text = TextEncoder()
    unet = VideoUNet.from_unet2d(UNet2D(UNetConfig.preset("tiny", context_dim=text.dim)), num_frames=8)
    for p in unet.parameters():  # non-zero everywhere, so that the denoiser changes the latents
        p.data.add_(0.05 * torch.randn_like(p))
    TextToVideoPipeline(unet, stage.model, text, image_size=64).save_pretrained(root / "t2v")
    return root


def test_pairs_have_the_clips_shapes_and_each_is_nearest_its_own_clip(checkpoints, tmp_path):
    pipe = TextToVideoPipeline.from_pretrained(checkpoints / "t2v")
    pairs = make_pairs(pipe, PairSettings(num_clips=5, **FEW_STEPS), batch_size=2, cache_dir=tmp_path)
    clean = encode_clips(pipe.vae, "train", 5, cache_dir=tmp_path)["latents"].float()  # (5, 8, c, h, w)
    latents = pairs["latents"]
    assert latents.shape == clean.shape and set(pairs["timesteps"].tolist()) <= {20, 40}
    assert not torch.allclose(latents, clean, atol=1e-3)  # denoised by the model, not copied
    distance = torch.cdist(latents.flatten(1), clean.flatten(1))  # (5, 5): pair i vs clip j
    assert torch.equal(distance.argmin(dim=1), torch.arange(5))  # pair i is clip i, and its target
    again = make_pairs(pipe, PairSettings(num_clips=5, **FEW_STEPS), batch_size=2, cache_dir=tmp_path)
    assert torch.equal(again["latents"], latents)  # from the cache


@pytest.mark.parametrize("bad, message", [(dict(num_clips=0), "num_clips must be in"),
                                          (dict(t_low=300, t_high=200), "t_low <= t_high"),
                                          (dict(eta=-1.0), "eta >= 0"), (dict(num_steps=0), "num_steps must be")])
def test_bad_pair_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        PairSettings(**bad)


def test_a_range_without_grid_points_is_refused(checkpoints, tmp_path):
    pipe = TextToVideoPipeline.from_pretrained(checkpoints / "t2v")
    with pytest.raises(ValueError, match="no timestep of the 50-step grid lies in"):
        make_pairs(pipe, PairSettings(num_clips=2, t_low=21, t_high=39), cache_dir=tmp_path)


def test_stage_draws_pairs_with_their_real_clips_and_trains(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr("minimagic.stages.videovae.make_pairs", lambda pipe, s: make_pairs(pipe, s, cache_dir=tmp_path))
    stage = VideoVAEStage(init=checkpoints / "vae", num_clips=6, generated_pairs=3, pair_fraction=1.0,
                          pairs_t2v=checkpoints / "t2v", pair_t_low=20, pair_t_high=40)
    assert stage.pairs.shape == (3, *stage.latents.shape[1:])
    batch = stage.batch(4, torch.Generator().manual_seed(0))
    clips = MovingDigits("train", length=6, num_frames=8)
    for latents, video in zip(batch["latents"], batch["video"], strict=True):  # each is pair i with clip i
        i = next(i for i in range(3) if torch.equal(latents, stage.pairs[i].float()))
        assert torch.equal(video, clips[i]["video"])
    before = {name: p.detach().clone() for name, p in stage.model.named_parameters()}
    train(stage, TrainConfig(steps=1, batch_size=2, warmup=1, preview_every=1), tmp_path / "run")
    assert any(not torch.equal(before[name], p) for name, p in stage.model.named_parameters()
               if name.startswith("vae.decoder."))


def test_stage_refuses_bad_pair_options(checkpoints, tmp_path):
    for bad in (dict(generated_pairs=7), dict(generated_pairs=-1), dict(generated_pairs=2, pair_fraction=0.0),
                dict(generated_pairs=2, pair_fraction=1.5)):
        with pytest.raises(ValueError, match="need 0 <= generated_pairs <= num_clips"):
            VideoVAEStage(init=checkpoints / "vae", num_clips=6, **bad)
    with pytest.raises(ValueError, match="t_low <= t_high"):
        VideoVAEStage(init=checkpoints / "vae", num_clips=6, generated_pairs=2, pair_t_low=300, pair_t_high=200)
    with pytest.raises(FileNotFoundError):
        VideoVAEStage(init=checkpoints / "vae", num_clips=6, generated_pairs=2, pairs_t2v=tmp_path / "missing")
    other = VAEStage(preset="tiny")  # another VAE: the t2v model's latents are not this one's
    other.model.encoder.conv_in.weight.data.add_(0.1)
    other.save(other.model, tmp_path / "other", command="test", num_frames=16)
    with pytest.raises(ValueError, match="another VAE's latents"):
        VideoVAEStage(init=tmp_path / "other", num_clips=6, generated_pairs=2, pairs_t2v=checkpoints / "t2v")
