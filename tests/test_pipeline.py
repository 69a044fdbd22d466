"""The text-to-video pipeline and the training stages, end to end on tiny models."""

import json

import pytest
import torch

from minimagic.__main__ import main
from minimagic.pipeline import TextToVideoPipeline
from minimagic.stages import TextToImageStage, TextToVideoStage, VAEStage
from minimagic.text import TextEncoder
from minimagic.train import TrainConfig, train
from minimagic.unet import UNet2D, UNetConfig
from minimagic.vae import VAE, VAEConfig
from minimagic.video import read_video
from minimagic.video_unet import VideoUNet

PROMPTS = ["the digit one moves left", "the digit two moves up"]


@pytest.fixture(scope="module")
def text():
    return TextEncoder()


@pytest.fixture(scope="module")
def tiny_pipeline(text):
    torch.manual_seed(0)
    unet = UNet2D(UNetConfig.preset("tiny", context_dim=text.dim))
    video_unet = VideoUNet.from_unet2d(unet, num_frames=4)
    for p in video_unet.parameters():  # non-zero everywhere, so that every part changes the output
        p.data.add_(0.05 * torch.randn_like(p))
    return TextToVideoPipeline(video_unet, VAE(VAEConfig.preset("tiny")), text, image_size=16)


def test_pipeline_shapes_range_and_seeded_determinism(tiny_pipeline):
    a = tiny_pipeline(PROMPTS, num_frames=3, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    b = tiny_pipeline(PROMPTS, num_frames=3, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    c = tiny_pipeline(PROMPTS, num_frames=3, num_inference_steps=2, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 3, 1, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    latents = tiny_pipeline(PROMPTS[:1], num_inference_steps=2, return_latents=True)
    assert latents.shape == (1, 4, 4, 8, 8)


def test_pipeline_save_load_round_trip(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "pipe", command="test")
    loaded = TextToVideoPipeline.from_pretrained(tmp_path / "pipe")
    assert loaded.is_video and loaded.unet.num_frames == 4
    for (name, a), b in zip(tiny_pipeline.unet.state_dict().items(), loaded.unet.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-3 * a.abs().max() + 1e-6), name  # saved in float16
    options = dict(num_inference_steps=2, guidance_scale=2.0)
    a = tiny_pipeline(PROMPTS, generator=torch.Generator().manual_seed(3), **options)
    b = loaded(PROMPTS, generator=torch.Generator().manual_seed(3), **options)
    assert (a - b).abs().max() < 0.05


def test_pipeline_rejects_bad_requests(tiny_pipeline, tmp_path):
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        tiny_pipeline(PROMPTS, num_frames=0)
    with pytest.raises(ValueError, match="guidance_scale"):
        tiny_pipeline(PROMPTS, guidance_scale=-1)
    with pytest.raises(ValueError, match="num_steps"):
        tiny_pipeline(PROMPTS, num_inference_steps=0)
    with pytest.raises(ValueError, match="at least one prompt"):
        tiny_pipeline([])
    with pytest.raises(ValueError, match="num_frames >= 2"):
        tiny_pipeline(PROMPTS, num_frames=1, interpolate=2)
    with pytest.raises(ValueError, match="latents of another VAE"):
        tiny_pipeline(PROMPTS, interpolate=2)  # the shipped interpolator works on the shipped VAE's latents
    with pytest.raises(FileNotFoundError, match="not found"):
        TextToVideoPipeline.from_pretrained(tmp_path / "nothing")
    VAE(VAEConfig.preset("tiny")).save_pretrained(tmp_path / "vae")
    with pytest.raises(ValueError, match="holds a 'vae' checkpoint"):
        TextToVideoPipeline.from_pretrained(tmp_path / "vae")


def test_stages_train_save_and_chain(tmp_path):
    """vae -> t2i -> t2v on tiny models: every stage trains a few steps and its checkpoint feeds the next."""
    options = dict(steps=2, batch_size=2, preview_every=2, log_every=1, warmup=1)
    vae_stage = VAEStage(preset="tiny")
    before = [p.detach().clone() for p in vae_stage.model.parameters()]
    vae = train(vae_stage, TrainConfig(**options), tmp_path / "runs" / "vae")
    assert any(not torch.equal(a, b) for a, b in zip(before, vae.parameters(), strict=True))
    vae_stage.save(vae, tmp_path / "vae", command="test", num_frames=16)
    assert (tmp_path / "runs" / "vae" / "log.csv").is_file() and (tmp_path / "runs" / "vae" / "loss.png").is_file()
    assert VAE.from_pretrained(tmp_path / "vae").config.scale_factor != 1.0

    t2i = TextToImageStage(preset="tiny", init=tmp_path / "vae", num_clips=8)
    t2i.save(train(t2i, TrainConfig(**options, ema_decay=0.9), tmp_path / "runs" / "t2i"), tmp_path / "t2i", "test")
    image_pipe = TextToVideoPipeline.from_pretrained(tmp_path / "t2i")
    assert not image_pipe.is_video
    assert image_pipe(["the digit one"], num_inference_steps=2).shape == (1, 1, 1, 64, 64)

    t2v = TextToVideoStage(preset="tiny", init=tmp_path / "t2i", num_clips=8)
    assert isinstance(t2v.model, VideoUNet)
    t2v.save(train(t2v, TrainConfig(**options), tmp_path / "runs" / "t2v"), tmp_path / "t2v", "test")
    assert json.loads((tmp_path / "t2v" / "config.json").read_text())["stage"] == "t2v"

    more = TextToVideoStage(preset="tiny", init=tmp_path / "t2v", num_clips=8)  # a t2v pipeline trains further
    saved = TextToVideoPipeline.from_pretrained(tmp_path / "t2v").unet.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in more.model.state_dict().items())
    with pytest.raises(ValueError, match="architecture is fixed"):
        TextToVideoStage(preset="tiny", init=tmp_path / "t2v", num_clips=8, use_adaptor=False)

    out = tmp_path / "seven.gif"
    main(["generate", "--prompt", "the digit seven moves left", "--checkpoint", str(tmp_path / "t2v"),
          "--steps", "2", "--out", str(out)])
    frames, _ = read_video(out)
    assert frames.shape == (8, 3, 64, 64)


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--prompt", "x", "--checkpoint", str(tmp_path / "missing"), "--out", "x.gif"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().startswith("error: checkpoint folder not found")
    with pytest.raises(SystemExit):
        main(["train", "vae", "--preset", "huge", "--steps", "1"])
    assert "unknown VAE preset 'huge'" in capsys.readouterr().err


def test_pipeline_decodes_with_its_videovae(tiny_pipeline, tmp_path):
    from minimagic.videovae import VideoVAE

    video_vae = VideoVAE.from_vae(tiny_pipeline.vae, num_frames=4)
    for p in video_vae.temporal.parameters():
        p.data.add_(0.3 * torch.randn_like(p))
    pipe = TextToVideoPipeline(tiny_pipeline.unet, tiny_pipeline.vae, tiny_pipeline.text_encoder, image_size=16,
                               videovae=video_vae)
    latents = pipe(PROMPTS, num_inference_steps=2, return_latents=True)
    assert torch.equal(pipe.decode(latents), video_vae.decode_video(latents).clamp(-1, 1))
    assert not torch.allclose(pipe.decode(latents, "vae"), pipe.decode(latents, "videovae"))
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = TextToVideoPipeline.from_pretrained(tmp_path / "pipe")
    assert loaded.videovae is not None
    assert torch.allclose(loaded.decode(latents), pipe.decode(latents), atol=1e-6)
    with pytest.raises(ValueError, match="decoder must be"):
        tiny_pipeline(PROMPTS, decoder="videovae")  # this one has no VideoVAE


def test_cli_refuses_options_a_stage_does_not_take(capsys):
    with pytest.raises(SystemExit):
        main(["train", "videovae", "--preset", "toy", "--steps", "1"])
    assert "the videovae stage takes no --preset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "vae", "--init", "somewhere", "--steps", "1"])
    assert "the vae stage takes no --init" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "t2i", "--temporal-weight", "2", "--steps", "1"])
    assert "the t2i stage takes no --temporal-weight" in capsys.readouterr().err
