"""Streaming with directed attention: per-frame t, the KV cache, the streaming sampler and the continuation loss."""

import signal

import pytest
import torch
from torch._inductor import config as inductor_config
from torchvision.utils import save_image

from minimagic.__main__ import main
from minimagic.bounces import acceptable_directions, direction_kept, expected_velocities
from minimagic.data import DATA_DIR, DIRECTION_NAMES, MovingDigits
from minimagic.diffusion import GaussianDiffusion
from minimagic.exercises.streaming import check_streaming_mask, streaming_mask
from minimagic.metrics import motion_direction
from minimagic.pipeline import TextToVideoPipeline
from minimagic.stages import ContinuationStage
from minimagic.streaming import continuation_loss, stream_latents, stream_pipeline
from minimagic.temporal_attention import TemporalKVCache
from minimagic.text import TextEncoder
from minimagic.train import TrainConfig, train
from minimagic.unet import UNet2D, UNetConfig
from minimagic.vae import VAE, VAEConfig
from minimagic.video import read_video
from minimagic.video_unet import VideoUNet

LATENT = (4, 8, 8)  # (c, h, w) of the tiny U-Net's latents
PROMPTS = ["the digit one moves left", "the digit two moves up"]


def tiny_video_unet(num_frames: int = 4, temporal_attention: str = "directed", seed: int = 0) -> VideoUNet:
    """A tiny VideoUNet with every parameter perturbed, so temporal attention and adaptors all matter."""
    torch.manual_seed(seed)
    model = VideoUNet.from_unet2d(UNet2D(UNetConfig.preset("tiny")), num_frames,
                                  temporal_attention=temporal_attention)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def inputs(frames: int, batch: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, frames, *LATENT, generator=g)  # (B, F, c, h, w)
    t = torch.randint(1, 1000, (batch,), generator=g)
    return x, t, torch.randn(batch, 5, 384, generator=g), torch.tensor([8.0, 4.0])[:batch]


@torch.no_grad()
def test_per_frame_t_with_equal_entries_equals_the_batch_t_path():
    model = tiny_video_unet()
    x, t, context, fps = inputs(4)
    per_frame = model(x, t[:, None].expand(-1, 4), context, fps=fps)
    torch.testing.assert_close(per_frame, model(x, t, context, fps=fps), atol=1e-5, rtol=0)
    t_frames = t[:, None].repeat(1, 4)
    t_frames[:, 2] = 0  # one frame at another noise level changes the output
    assert (model(x, t_frames, context, fps=fps) - per_frame).abs().max() > 1e-3


@torch.no_grad()
@pytest.mark.parametrize("cached", [1, 3])
def test_cached_keys_values_give_the_uncached_output(cached):
    model = tiny_video_unet()
    x, t, context, fps = inputs(4)
    t_frames = torch.cat([torch.zeros(2, cached, dtype=torch.long), t[:, None].expand(-1, 4 - cached)], dim=1)
    full = model(x, t_frames, context, fps=fps)  # (B, 4, c, h, w), no cache
    cache = TemporalKVCache()
    model(x[:, :cached], torch.zeros(2, dtype=torch.long), context, fps=fps, cache=cache, extend_cache=True)
    assert cache.num_frames == cached
    new = model(x[:, cached:], t, context, fps=fps, cache=cache)
    assert cache.num_frames == cached  # denoising new frames does not store them
    torch.testing.assert_close(new, full[:, cached:], atol=1e-5, rtol=0)
    assert (full[:, cached:] - model(x[:, cached:], t, context, fps=fps)).abs().max() > 1e-3  # the cache matters


@torch.no_grad()
def test_a_later_frame_never_changes_an_earlier_output():
    model = tiny_video_unet()
    x, t, context, fps = inputs(4)
    changed = x.clone()
    changed[:, 2] += 1.0
    a, b = model(x, t, context, fps=fps), model(changed, t, context, fps=fps)
    torch.testing.assert_close(a[:, :2], b[:, :2], atol=0, rtol=0)
    assert (a[:, 2:] - b[:, 2:]).abs().max() > 1e-3
    bidirectional = tiny_video_unet(temporal_attention="bidirectional")
    a, b = bidirectional(x, t, context, fps=fps), bidirectional(changed, t, context, fps=fps)
    assert (a[:, :2] - b[:, :2]).abs().max() > 1e-3  # the test would see a leak


def stream(model, num_frames, **options):
    _, _, context, _ = inputs(1)
    uncond = torch.zeros(1, 5, 384)
    options = {"num_steps": 3, "guidance_scale": 2.0, "generator": torch.Generator().manual_seed(0), **options}
    blocks = stream_latents(model, GaussianDiffusion(), context, uncond, num_frames, 8.0, LATENT, **options)
    return torch.cat(list(blocks), dim=1)  # (B, num_frames, c, h, w)


@pytest.mark.parametrize("block_size,keep_frames,context_t,sink_frames",
                         [(1, None, 0, 0), (2, None, 0, 0), (1, 2, 0, 0), (1, None, 50, 0), (1, None, 0, 1),
                          (2, None, 0, 1)])
def test_streaming_with_the_cache_equals_recomputing_the_window(block_size, keep_frames, context_t, sink_frames):
    model = tiny_video_unet()  # trained for 4 frames: 7 frames slide the window
    options = {"block_size": block_size, "keep_frames": keep_frames, "context_t": context_t, "sink_frames": sink_frames}
    cached = stream(model, 7, **options)
    recomputed = stream(model, 7, use_cache=False, **options)
    assert cached.shape == (2, 7, *LATENT)
    torch.testing.assert_close(cached, recomputed, atol=1e-5, rtol=1e-5)  # latents reach ~8


def test_the_window_keeps_keep_frames_of_it_when_it_slides_and_the_cache_is_rebuilt_only_then():
    model, calls = tiny_video_unet(), []  # 4 frames: keep_frames=2 slides the window by 2 frames when full

    def spy(x, t, *args, extend_cache=False, **kwargs):  # (frames, given frames, cache pass) of each call
        calls.append((x.shape[1], int((t == 0).sum()) // len(t) if t.ndim == 2 else 0, extend_cache))
        return model(x, t, *args, extend_cache=extend_cache, **kwargs)

    spy.num_frames, spy.config = model.num_frames, model.config
    stream(spy, 7, use_cache=False, keep_frames=2)
    given = [prefix for _, prefix, _ in calls[::3]]  # one entry per block (3 DDIM steps each)
    assert given == [0, 1, 2, 3, 2, 3, 2]  # each later block after >= F/2 finished frames
    calls.clear()
    stream(spy, 7, keep_frames=2)
    assert [frames for frames, _, extend in calls if extend] == [1, 1, 1, 2, 1, 2]  # rebuilt at frames 4 and 6
    calls.clear()
    stream(spy, 7)  # by default the window slides by one frame: F - 1 frames of context for every new one
    assert [frames for frames, _, extend in calls if extend] == [1, 1, 1, 3, 3, 3]
    calls.clear()
    stream(spy, 7, use_cache=False)
    assert [prefix for _, prefix, _ in calls[::3]] == [0, 1, 2, 3, 3, 3, 3]


def test_a_frame_sink_keeps_the_first_frame_in_row_0_of_every_later_window():
    model, windows = tiny_video_unet(), []  # 4 frames: frame sink + the last 2 finished frames + the new one

    def spy(x, t, *args, **kwargs):
        windows.append(x)
        return model(x, t, *args, **kwargs)

    spy.num_frames, spy.config = model.num_frames, model.config
    video = stream(spy, 7, use_cache=False, sink_frames=1)
    plain = stream(model, 7, use_cache=False)
    later = windows[3 * 4:]  # the blocks of frames 4, 5, 6 (3 DDIM steps each)
    assert [w.shape[1] for w in later] == [4] * 9
    for i, window in enumerate(later):
        new = 4 + i // 3  # the frame this window makes
        for half in window.split(2):  # guidance runs the conditional and unconditional batches in one call
            torch.testing.assert_close(half[:, 0], video[:, 0], atol=0, rtol=0)  # the sink: frame 0
            torch.testing.assert_close(half[:, 1:3], video[:, new - 2:new], atol=0, rtol=0)  # then the last two
    torch.testing.assert_close(video[:, :4], plain[:, :4], atol=0, rtol=0)  # the same until the window slides
    assert not torch.allclose(video[:, 4:], plain[:, 4:])


def test_streamed_frames_do_not_depend_on_the_frames_after_them():
    model = tiny_video_unet()
    torch.testing.assert_close(stream(model, 6)[:, :4], stream(model, 4), atol=0, rtol=0)
    bidirectional = tiny_video_unet(temporal_attention="bidirectional")  # samples its window jointly
    a, b = stream(bidirectional, 4, use_cache=False), stream(bidirectional, 3, use_cache=False)
    assert (a[:, :3] - b).abs().max() > 1e-3


def test_image_to_video_keeps_the_given_frame_and_conditions_on_it():
    model = tiny_video_unet()
    first = torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(5))
    video = stream(model, 5, first_frame=first)
    assert video.shape == (2, 5, *LATENT) and torch.equal(video[:, 0], first)
    other = stream(model, 5, first_frame=-first)
    assert (video[:, 1] - other[:, 1]).abs().max() > 1e-3
    noised = stream(model, 5, first_frame=first, context_t=100)  # the model is given frame 0 noised, t = 100
    assert torch.equal(noised[:, 0], first) and (noised[:, 1] - video[:, 1]).abs().max() > 1e-3


def test_streaming_errors():
    model = tiny_video_unet()
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        stream(model, 0)
    with pytest.raises(ValueError, match="block_size"):
        stream(model, 6, block_size=4)
    with pytest.raises(ValueError, match="keep_frames must be in"):
        stream(model, 6, keep_frames=4)
    with pytest.raises(ValueError, match=r"context_t must be in \[0, 999\]"):
        stream(model, 6, context_t=1000)
    with pytest.raises(ValueError, match="sink_frames must be below keep_frames and 4 - block_size"):
        stream(model, 6, keep_frames=2, sink_frames=2)
    with pytest.raises(ValueError, match="first_frame latents must be"):
        stream(model, 3, first_frame=torch.zeros(2, 4, 4, 4))
    with pytest.raises(ValueError, match="bidirectional model cannot use the KV cache"):
        stream(tiny_video_unet(temporal_attention="bidirectional"), 3)
    x, t, context, fps = inputs(2)
    with pytest.raises(ValueError, match="needs directed temporal attention"):
        tiny_video_unet(temporal_attention="bidirectional")(x, t, context, fps=fps, cache=TemporalKVCache())
    cache = TemporalKVCache()
    model(x, t, context, fps=fps, cache=cache, extend_cache=True)
    with pytest.raises(ValueError, match=r"1 <= F <= 2 \(model: 4 frames, 2 cached\)"):
        model(torch.cat([x, x], dim=1)[:, :3], t, context, fps=fps, cache=cache)
    with pytest.raises(ValueError, match=r"t must be \(2,\) or \(2, 2\)"):
        model(x, t[:, None].expand(-1, 3), context, fps=fps)


def test_continuation_loss_gives_the_prefix_clean_at_t0_and_scores_only_the_noisy_frames():
    model = tiny_video_unet()
    x0, _, context, fps = inputs(4, batch=8)
    seen = {}

    def spy(x_t, t, **kwargs):
        seen["x_t"], seen["t"], seen["out"] = x_t, t, model(x_t, t, **kwargs)
        seen["out"].retain_grad()
        return seen["out"]

    loss = continuation_loss(spy, GaussianDiffusion(), x0, context, fps.repeat(4),
                             torch.Generator().manual_seed(0))
    given = seen["t"] == 0  # (B, F)
    assert seen["t"].shape == (8, 4) and given.any() and (~given).any()
    assert (given[:, 1:] <= given[:, :-1]).all()  # a prefix: clean frames come first
    assert torch.equal(seen["x_t"][given], x0[given]) and not torch.equal(seen["x_t"][~given], x0[~given])
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    grad = seen["out"].grad.abs().sum(dim=(2, 3, 4))  # (B, F): the loss reaches the noisy frames' outputs only
    assert (grad[given] == 0).all() and (grad[~given] > 0).all()
    continuation_loss(spy, GaussianDiffusion(), x0, context, fps.repeat(4), torch.Generator().manual_seed(0),
                      min_prefix=torch.ones(8, dtype=torch.long))  # windows cut after frame 0 of a long clip
    assert (seen["t"][:, 0] == 0).all() and (seen["t"][:, -1] > 0).all()


def test_continuation_loss_with_context_noise_gives_the_prefix_noised_to_a_low_level():
    model, diffusion = tiny_video_unet(), GaussianDiffusion()
    x0, _, context, fps = inputs(4, batch=64)
    seen = {}

    def spy(x_t, t, **kwargs):
        seen["x_t"], seen["t"] = x_t, t
        return model(x_t, t, **kwargs)

    generator = torch.Generator().manual_seed(0)
    continuation_loss(spy, diffusion, x0, context, fps.repeat(32), generator, min_prefix=torch.ones(64),
                      context_noise=20)
    t_given = seen["t"][:, 0]  # (B,) every clip has a prefix here
    assert t_given.max() <= 20 and (t_given == 0).any() and (t_given > 10).any()
    clean = t_given == 0
    assert torch.equal(seen["x_t"][clean, 0], x0[clean, 0])  # level 0: exactly the clean frame
    abar = diffusion.alphas_cumprod[t_given[~clean]].view(-1, 1, 1, 1)
    residual = (seen["x_t"][~clean, 0] - abar.sqrt() * x0[~clean, 0]) / (1 - abar).sqrt()  # the noise drawn
    assert 0.8 < residual.std() < 1.2  # noised to exactly that level


def test_continuation_batches_are_t2v_clips_or_later_windows_of_long_clips_given_half_their_frames(
        tiny_pipeline, tmp_path):
    unet = tiny_video_unet(num_frames=8)
    TextToVideoPipeline(unet, tiny_pipeline.vae, tiny_pipeline.text_encoder, image_size=64).save_pretrained(
        tmp_path / "t2v", command="test")
    stage = ContinuationStage(init=tmp_path / "t2v", num_clips=3, clip_frames=12)
    latents = stage.long["latents"]  # (3, 12, c, h, w)
    assert latents.shape[:2] == (3, 12)
    batch = stage.batch(24, torch.Generator().manual_seed(0))
    first = batch["offset"] == 0
    assert batch["x0"].shape == (24, 8, *latents.shape[2:]) and 4 < first.sum() < 20  # about half of each kind
    for x0, offset in zip(batch["x0"], batch["offset"].tolist(), strict=True):
        clips = stage.clips["latents"] if offset == 0 else latents[:, offset:offset + 8]  # t2v clips: no bounce
        assert any(torch.equal(x0, clip.float()) for clip in clips)
    seen = {}

    def spy(x_t, t, **kwargs):
        seen["t"] = t
        return stage.model(x_t, t, **kwargs)

    stage.loss(spy, batch, torch.Generator().manual_seed(0))
    given = (seen["t"] == 0).sum(1)  # (B,) prefix lengths
    assert (given[~first] >= 4).all() and (given[first] < 4).any()  # later windows show their motion
    with pytest.raises(ValueError, match="clip_frames must be >= the model's 8 frames"):
        ContinuationStage(init=tmp_path / "t2v", num_clips=3, clip_frames=4)


def test_with_frame_sinks_later_windows_begin_with_the_clip_start_and_the_model_streams_with_them(
        tiny_pipeline, tmp_path):
    unet = tiny_video_unet(num_frames=8)
    TextToVideoPipeline(unet, tiny_pipeline.vae, tiny_pipeline.text_encoder, image_size=64).save_pretrained(
        tmp_path / "t2v", command="test")
    stage = ContinuationStage(init=tmp_path / "t2v", num_clips=3, clip_frames=12, sink_frames=1)
    latents = stage.long["latents"].float()  # (3, 12, c, h, w)
    batch = stage.batch(24, torch.Generator().manual_seed(0))
    later = batch["offset"] > 0
    assert later.sum() > 4
    for x0, offset in zip(batch["x0"][later], batch["offset"][later].tolist(), strict=True):
        windows = torch.cat([latents[:, :1], latents[:, offset + 1:offset + 8]], dim=1)  # (3, 8, c, h, w)
        assert any(torch.equal(x0, window) for window in windows)
    stage.save(stage.model, tmp_path / "out", command="test")
    assert TextToVideoPipeline.from_pretrained(tmp_path / "out").stream_options == {"sink_frames": 1}
    with pytest.raises(ValueError, match=r"sink_frames must be in \[0, 3\]"):
        ContinuationStage(init=tmp_path / "t2v", num_clips=3, clip_frames=12, sink_frames=4)


def bouncing_clips(num_clips: int = 40, num_frames: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    data = MovingDigits("test", num_frames=num_frames, length=num_clips, seed=1)
    items = [data[i] for i in range(num_clips)]
    return torch.stack([item["video"] for item in items]), torch.tensor([item["direction"] for item in items])


def digit_at(positions: list[tuple[int, int]]) -> torch.Tensor:
    """A (1, F, 1, 64, 64) clip of a 28x28 block whose top-left corner is at each (x, y)."""
    video = -torch.ones(1, len(positions), 1, 64, 64)
    for f, (x, y) in enumerate(positions):
        video[0, f, 0, y + 4:y + 24, x + 8:x + 20] = 1  # a digit-like stroke block centred in its 28x28 box
    return video


def test_real_bouncing_clips_keep_the_bounce_aware_direction_in_every_window():
    videos, directions = bouncing_clips()
    assert direction_kept(videos, directions, 8).all()
    captioned = torch.stack([motion_direction(videos[:, w:w + 8]) == directions for w in range(0, 32, 8)], 1)
    assert not captioned[:, 1:].all()  # they do bounce: the caption alone would score them wrong


def test_a_canvas_whose_walls_lie_within_the_margin_is_judged_in_finite_time():
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("expected_velocities looped"))
    signal.alarm(10)
    path = torch.full((8, 2), 15.5)  # a 28x28 digit still in the middle of a 32x32 canvas: 2 px from both walls
    steps = expected_velocities(path, DIRECTION_NAMES.index("right"), size=32)
    signal.alarm(0)
    assert steps.shape == (7, 2) and steps[:, 1].eq(0).all() and steps[:, 0].abs().eq(1).all()


def test_a_digit_that_turns_back_in_mid_canvas_or_sticks_to_a_wall_is_scored_wrong():
    right = DIRECTION_NAMES.index("right")
    turns_back = digit_at([(3 + 2 * f, 18) for f in range(8)] + [(17 - 2 * f, 18) for f in range(8)])
    assert direction_kept(turns_back, torch.tensor([right]), 8).tolist() == [[True, False]]
    bounces = digit_at([(20 + 3 * f, 18) for f in range(6)] + [(36 - 3 * f, 18) for f in range(1, 11)])
    assert direction_kept(bounces, torch.tensor([right]), 8).tolist() == [[True, True]]
    sticks = digit_at([(20 + 3 * f, 18) for f in range(6)] + [(36, 18)] * 10)
    assert direction_kept(sticks, torch.tensor([right]), 8).tolist() == [[True, False]]
    acceptable = acceptable_directions(bounces, torch.tensor([right]), 8)[0]  # (2 windows, 8)
    assert acceptable[1].tolist() == [name == "left" for name in DIRECTION_NAMES]
    with pytest.raises(ValueError, match="window must be in"):
        direction_kept(bounces, torch.tensor([right]), 20)
    with pytest.raises(ValueError, match="one direction per clip"):
        direction_kept(bounces, torch.tensor([right, right]), 8)


@pytest.fixture(scope="module")
def tiny_pipeline():
    text = TextEncoder()
    model = VideoUNet.from_unet2d(UNet2D(UNetConfig.preset("tiny", context_dim=text.dim)), 4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    return TextToVideoPipeline(model, VAE(VAEConfig.preset("tiny")), text, image_size=16)


def test_pipeline_streams_any_length_and_from_a_first_frame(tiny_pipeline, tmp_path):
    options = dict(num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    video = tiny_pipeline(PROMPTS, num_frames=9, **options)  # more than the 4 trained frames
    assert video.shape == (2, 9, 1, 16, 16) and video.min() >= -1 and video.max() <= 1
    image = torch.rand(1, 16, 16) * 2 - 1
    latents = tiny_pipeline(PROMPTS, num_frames=3, first_frame=image, return_latents=True, **options)
    given = tiny_pipeline.vae.encode_video(image[None, None].expand(2, -1, -1, -1, -1))  # (2, 1, c, h, w)
    assert latents.shape == (2, 3, 4, 8, 8) and torch.equal(latents[:, :1], given)
    tiny_pipeline.save_pretrained(tmp_path / "pipe", command="test")  # a saved model loads and streams
    loaded = TextToVideoPipeline.from_pretrained(tmp_path / "pipe")
    assert loaded(PROMPTS[:1], num_frames=6, num_inference_steps=2).shape == (1, 6, 1, 16, 16)


def test_pipeline_streaming_errors_are_one_line(tiny_pipeline):
    for bad in (torch.zeros(1, 8, 8), torch.zeros(3, 16, 16), torch.zeros(3, 1, 16, 16)):
        with pytest.raises(ValueError, match=r"first_frame must be \(1, 16, 16\)") as error:
            tiny_pipeline(PROMPTS, num_frames=3, num_inference_steps=2, first_frame=bad)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        tiny_pipeline(PROMPTS, num_frames=0, first_frame=torch.zeros(1, 16, 16))


def test_cli_streams_frames_to_files_from_a_first_frame(tiny_pipeline, tmp_path, capsys):
    tiny_pipeline.save_pretrained(tmp_path / "pipe", command="test")
    save_image(torch.rand(1, 16, 16), tmp_path / "digit.png")
    out = tmp_path / "clip.gif"
    main(["generate", "--prompt", PROMPTS[0], "--checkpoint", str(tmp_path / "pipe"), "--steps", "2",
          "--num-frames", "6", "--first-frame", str(tmp_path / "digit.png"), "--stream", "--out", str(out)])
    assert sorted(p.name for p in (tmp_path / "clip").iterdir()) == [f"frame_{i:04d}.png" for i in range(6)]
    assert read_video(out)[0].shape == (6, 3, 16, 16)
    save_image(torch.rand(1, 28, 28), tmp_path / "mnist.png")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["generate", "--prompt", PROMPTS[0], "--checkpoint", str(tmp_path / "pipe"), "--steps", "2",
              "--first-frame", str(tmp_path / "mnist.png"), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: first_frame must be (1, 16, 16)") and "\n" not in err


def test_cli_guidance_defaults_to_4_for_streamed_clips_only(tiny_pipeline, tmp_path, monkeypatch):
    from minimagic import pipeline, streaming

    tiny_pipeline.save_pretrained(tmp_path / "pipe", command="test")
    seen = []

    def record(*args, **kwargs):  # stands in for sampling: notes the guidance, returns a black clip
        seen.append(kwargs["guidance_scale"])
        return torch.zeros(1, kwargs.get("num_frames") or 2, 1, 16, 16) - 1

    monkeypatch.setattr(pipeline.TextToVideoPipeline, "__call__", record)
    monkeypatch.setattr(streaming, "stream_to_folder", lambda *args, **kwargs: record(**kwargs)[0])
    trained = tiny_pipeline.unet.num_frames
    base = ["generate", "--prompt", PROMPTS[0], "--checkpoint", str(tmp_path / "pipe"),
            "--out", str(tmp_path / "c.gif")]
    for extra in ([], ["--num-frames", str(trained)], ["--num-frames", str(trained + 1)], ["--stream"],
                  ["--num-frames", str(trained + 1), "--guidance", "6"]):
        main(base + extra)
    assert seen == [7.5, 7.5, 4.0, 4.0, 6.0]


def test_bench_quick_mode_fills_every_field(load_script, tmp_path):
    bench = load_script("bench/streaming.py")
    results = bench.main(["--quick", "--out", str(tmp_path / "r.json"), "--md", str(tmp_path / "r.md")])
    assert set(results["latency"]) == {"directed, cache", "directed, no cache", "bidirectional", "ratios"}
    assert all(row["first_frame_s"] > 0 for name, row in results["latency"].items() if name != "ratios")
    for row in results["quality"].values():
        assert len(row["digit_accuracy_per_frame"]) == 8 and len(row["direction_accuracy_per_window"]) == 1
    real = results["quality"]["real test clips (reference)"]  # the truth, scored by the same metrics
    assert set(real) | {"seconds_per_clip"} == set(results["quality"]["directed (tiny)"])
    assert real["digit_accuracy"] >= 0.9
    assert list(results["image_to_video"]) == ["directed (tiny)"]
    assert "| bidirectional |" in (tmp_path / "r.md").read_text()


def test_bench_times_the_directed_weights_under_the_bidirectional_mask_when_no_bidirectional_model_is_given(
        load_script, tmp_path):
    bench = load_script("bench/streaming.py")
    directed = bench.tiny_pipelines()[0]
    directed.save_pretrained(tmp_path / "run" / "d", command="test")
    masks, latency = [], bench.latency
    bench.latency = lambda d, b, *args: masks.append((d.unet.config.temporal_attention,
                                                      b.unet.config.temporal_attention)) or latency(d, b, *args)
    results = bench.main(["--directed", str(tmp_path / "run" / "d"), "--parts", "latency", "--lengths", "5",
                          "--latency-steps", "1", "--latency-repeats", "1", "--md", str(tmp_path / "r.md")])
    assert masks == [("directed", "bidirectional")] and set(results) == {"meta", "latency"}
    assert "Quality" not in (tmp_path / "r.md").read_text()
    bidirectional = directed.unet.with_temporal_attention("bidirectional")
    for name, value in directed.unet.state_dict().items():
        torch.testing.assert_close(bidirectional.state_dict()[name], value, atol=0, rtol=0)
    with pytest.raises(ValueError, match="give --directed"):
        bench.main(["--bidirectional", str(tmp_path / "run" / "d")])


def test_bench_times_each_frame_when_it_is_decoded_not_when_its_block_is(load_script, monkeypatch):
    bench = load_script("bench/streaming.py")
    decoded = []

    class Pipe:  # a stream of one 8-frame block, then single frames; decoding records what it is given
        vae = type("VAE", (), {"decode_video": staticmethod(lambda block: decoded.append(block.shape[1]))})

    def blocks(*args):
        yield torch.zeros(1, 8, 4, 2, 2)
        while True:
            yield torch.zeros(1, 1, 4, 2, 2)

    monkeypatch.setattr(bench, "open_stream", blocks)
    first = bench.streams_in_turns({"bidirectional": (Pipe(), False)}, 10, 1, 1.0, 0.0, first_block_only=True)
    assert len(first["bidirectional"]) == 1 and decoded == [1]  # frame 0 shown after one frame's decode
    decoded.clear()
    times = bench.streams_in_turns({"bidirectional": (Pipe(), False)}, 10, 1, 1.0, 0.0)["bidirectional"]
    assert decoded == [1] * 10 and len(times) == 10 and times == sorted(times)


def test_streaming_mask_exercise_passes_the_reference_and_rejects_wrong_masks(capsys):
    assert check_streaming_mask(streaming_mask)
    assert capsys.readouterr().out.strip() == "streaming_mask: passed"
    top_left = lambda P, F: torch.ones(F, P + F, dtype=torch.bool).tril()  # noqa: E731
    assert not check_streaming_mask(top_left)
    assert "not shifted by the cache" in capsys.readouterr().out
    off_by_one = lambda P, F: torch.ones(F, P + F, dtype=torch.bool).tril(P - 1)  # noqa: E731
    assert not check_streaming_mask(off_by_one)
    assert "expected True" in capsys.readouterr().out
    assert not check_streaming_mask(lambda P, F: torch.ones(F, F, dtype=torch.bool).tril())
    assert "expected a" in capsys.readouterr().out

    def stub(num_cached, num_new):
        raise NotImplementedError

    assert not check_streaming_mask(stub)
    assert capsys.readouterr().out.strip() == "streaming_mask: not attempted yet"


def test_continuation_stage_trains_saves_and_the_saved_model_streams(tiny_pipeline, tmp_path, monkeypatch):
    monkeypatch.setattr("minimagic.stages.continuation.PREVIEW_STEPS", 1)
    monkeypatch.setattr("minimagic.stages.continuation.PREVIEW_FRAMES", 9)
    unet = tiny_video_unet(num_frames=8)  # the training clips have 8 frames
    tiny_t2v = TextToVideoPipeline(unet, tiny_pipeline.vae, tiny_pipeline.text_encoder, image_size=64)
    tiny_t2v.save_pretrained(tmp_path / "t2v", command="test")
    stage = ContinuationStage(init=tmp_path / "t2v", num_clips=4, temporal_attention="bidirectional", clip_frames=12)
    assert stage.model.config.temporal_attention == "bidirectional"
    for name, value in unet.state_dict().items():  # the t2v weights, under another mask
        torch.testing.assert_close(stage.model.state_dict()[name], value, atol=1e-3 * value.abs().max() + 1e-6, rtol=0)
    model = train(stage, TrainConfig(steps=2, batch_size=2, warmup=1, log_every=1, preview_every=2), tmp_path / "run")
    stage.save(model, tmp_path / "out", command="test")
    loaded = TextToVideoPipeline.from_pretrained(tmp_path / "out")
    assert loaded.unet.config.temporal_attention == "bidirectional"
    assert (tmp_path / "run" / "preview_000002.png").is_file()
    video = loaded(PROMPTS[:1], num_frames=9, num_inference_steps=1)  # past its 8 frames: the sliding window
    assert video.shape == (1, 9, 1, 64, 64)
    with pytest.raises(ValueError, match="temporal_attention must be 'directed' or 'bidirectional'"):
        ContinuationStage(init=tmp_path / "t2v", num_clips=4, temporal_attention="none")
    with pytest.raises(ValueError, match=r"context_noise must be in \[0, 999\]"):
        ContinuationStage(init=tmp_path / "t2v", num_clips=4, context_noise=1000)


def test_a_model_trained_with_context_noise_streams_at_half_its_level(tiny_pipeline, tmp_path):
    tiny_t2v = TextToVideoPipeline(tiny_video_unet(num_frames=8), tiny_pipeline.vae, tiny_pipeline.text_encoder,
                                   image_size=64)
    tiny_t2v.save_pretrained(tmp_path / "t2v", command="test")
    stage = ContinuationStage(init=tmp_path / "t2v", num_clips=4, clip_frames=12, context_noise=40)
    stage.save(stage.model, tmp_path / "out", command="test")
    loaded = TextToVideoPipeline.from_pretrained(tmp_path / "out")
    assert loaded.stream_options == {"context_t": 20}
    assert TextToVideoPipeline.from_pretrained(tmp_path / "t2v").stream_options == {}

    def stream(**options):
        blocks = stream_pipeline(loaded, PROMPTS[:1], 3, num_inference_steps=2,
                                 generator=torch.Generator().manual_seed(0), **options)
        return torch.cat(list(blocks), dim=1)  # (1, 3, c, h, w)

    default, at_20, clean = stream(), stream(context_t=20), stream(context_t=0)
    torch.testing.assert_close(default, at_20, atol=0, rtol=0)
    torch.testing.assert_close(default[:, 0], clean[:, 0], atol=0, rtol=0)  # frame 0 has no finished frames
    assert (default[:, 1:] - clean[:, 1:]).abs().max() > 1e-4


def test_the_shipped_continuation_model_streams_past_its_window():
    pipe = TextToVideoPipeline.from_pretrained(DATA_DIR / "checkpoints" / "continuation-moving-digits")
    assert pipe.unet.config.temporal_attention == "directed" and pipe.unet.num_frames == 8
    video = pipe(PROMPTS[:1], num_frames=10, num_inference_steps=2, guidance_scale=1.0)
    assert video.shape == (1, 10, 1, 64, 64) and video.isfinite().all()


def test_bench_compiled_part_times_compiled_copies_beside_the_eager_models(load_script, monkeypatch, tmp_path):
    bench = load_script("bench/streaming.py")
    compiled = []  # the pipelines compiled: a spy, since compiling itself is tested in tests/test_compile.py
    monkeypatch.setattr(TextToVideoPipeline, "compile", lambda pipe: compiled.append(pipe) or pipe)
    results = bench.main(["--quick", "--parts", "compiled", "--md", str(tmp_path / "r.md")])
    part = results["compiled"]
    assert set(part) == {"directed, cache", "bidirectional", "directed, cache, compiled", "bidirectional, compiled",
                         "ratios"}
    assert len(compiled) == 2 and [p.unet.config.temporal_attention for p in compiled] == ["directed",
                                                                                         "bidirectional"]
    assert all(row["first_frame_s"] > 0 and row["warm_up_s"] > 0 for name, row in part.items() if name != "ratios")
    ratio = part["bidirectional, compiled"]["first_frame_s"] / part["directed, cache, compiled"]["first_frame_s"]
    assert part["ratios"]["first_frame_bidirectional_over_cache, compiled"] == round(ratio, 2)
    assert "eager and compiled" in (tmp_path / "r.md").read_text() and "latency" not in results


def test_bench_compiled_part_with_freeze_streams_with_frozen_weights(load_script, monkeypatch):
    bench = load_script("bench/streaming.py")
    monkeypatch.setattr(TextToVideoPipeline, "compile", lambda pipe: pipe)  # compiling itself: tests/test_compile.py
    freezing = []  # inductor's freezing flag in each round of streams, where the compiled copies compile and run
    streams = bench.streams_in_turns
    monkeypatch.setattr(bench, "streams_in_turns", lambda *args, **kwargs: freezing.append(
        inductor_config.freezing) or streams(*args, **kwargs))
    for freeze in (False, True):
        freezing.clear()
        results = bench.main(["--quick", "--parts", "compiled"] + ["--freeze"] * freeze)
        assert freezing == [freeze] * 2 and results["meta"]["freeze"] is freeze  # warm-up and one timed round
    assert not inductor_config.freezing  # the flag is set only inside the part
