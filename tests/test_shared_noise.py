"""The mixed noise prior (shared_noise): shapes, the old path when off, frames correlated by a, bad values;
bench/levers.py; generate's --shared-noise and --eta."""

from types import SimpleNamespace

import pytest
import torch

from minimagic.__main__ import main
from minimagic.diffusion import GaussianDiffusion
from minimagic.pipeline import TextToVideoPipeline
from minimagic.text import TextEncoder
from minimagic.unet import UNet2D, UNetConfig
from minimagic.vae import VAE, VAEConfig
from minimagic.video_unet import VideoUNet

PROMPT = ["the digit one moves left"]


def starting_noise(shape: tuple[int, ...], shared_noise: float, seed: int = 0) -> torch.Tensor:
    """x_T as the sampler draws it: one DDIM step with eps = 0 returns x_0 = x_T / sqrt(abar_t)."""
    diffusion = GaussianDiffusion()
    out = diffusion.sample(lambda x, t: torch.zeros_like(x), shape, 1, shared_noise=shared_noise,
                           generator=torch.Generator().manual_seed(seed))
    return out * diffusion.alphas_cumprod[diffusion.timesteps(1)[0]].sqrt()  # x_T


def test_shared_noise_correlates_frames_by_a():
    """Every frame's x_T stays N(0, I); two frames' x_T correlate by a (0 when off)."""
    for a in (0.0, 0.3, 0.7):
        x = starting_noise((2000, 2, 4, 4, 4), a)
        first, second = x[:, 0].flatten(), x[:, 1].flatten()
        assert abs(first.std().item() - 1) < 0.02 and abs(second.std().item() - 1) < 0.02
        assert abs(torch.corrcoef(torch.stack([first, second]))[0, 1].item() - a) < 0.02


def test_shared_noise_off_is_the_old_draw():
    """a = 0 draws exactly what the sampler drew before the option; a > 0 mixes that same draw in."""
    shape = (3, 4, 2, 4, 4)
    generator = torch.Generator().manual_seed(0)
    old = torch.randn(shape, generator=generator)
    shared = torch.randn((3, 1, 2, 4, 4), generator=generator)  # drawn after eps_f, one per clip
    torch.testing.assert_close(starting_noise(shape, 0.0), old)
    torch.testing.assert_close(starting_noise(shape, 0.5), 0.5**0.5 * old + 0.5**0.5 * shared)


@pytest.fixture(scope="module")
def pipe() -> TextToVideoPipeline:
    torch.manual_seed(0)
    text = TextEncoder()
    unet = VideoUNet.from_unet2d(UNet2D(UNetConfig.preset("tiny", context_dim=text.dim)), num_frames=2)
    return TextToVideoPipeline(unet, VAE(VAEConfig.preset("tiny")), text, image_size=16)


def test_pipeline_passes_shared_noise_through(pipe):
    """Same shape; shared_noise=0 equals the call without it; a > 0 changes the clip."""
    def run(**options):
        return pipe(PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(0), return_latents=True,
                    **options)

    default, off, on = run(), run(shared_noise=0.0), run(shared_noise=0.4)
    assert on.shape == default.shape == (1, 2, *pipe.latent_size)
    torch.testing.assert_close(off, default)
    assert (on - default).abs().max() > 1e-3


@pytest.mark.parametrize("a", [-0.1, 1.5, float("nan")])
def test_bad_shared_noise_is_one_line(pipe, a):
    with pytest.raises(ValueError, match="shared_noise") as error:
        pipe(PROMPT, num_inference_steps=2, shared_noise=a)
    assert "\n" not in str(error.value)


def test_shared_noise_needs_frames_and_no_streaming(pipe):
    with pytest.raises(ValueError, match="shared_noise must be .* only for videos"):
        GaussianDiffusion().sample(lambda x, t: x, (1, 4, 4, 4), 2, shared_noise=0.3)
    with pytest.raises(ValueError, match="shared_noise=0.3"):
        pipe(PROMPT, num_frames=3, num_inference_steps=2, shared_noise=0.3)


def test_levers_bench_pairs_settings_on_the_same_noise(pipe, load_script, tmp_path):
    """bench/levers.py: settings over the generate defaults; a setting equal to the first keeps and loses no clip
    that the first does not; the running JSON is written; bad settings are one line."""
    bench = load_script("bench/levers.py")
    assert bench.parse_setting("shared_noise=0.3,num_inference_steps=2") == {
        **bench.DEFAULTS, "shared_noise": 0.3, "num_inference_steps": 2}
    for bad in ("shared=0.3", "guidance_scale", "guidance_scale=x"):
        with pytest.raises(ValueError, match="setting .*: each item must be KEY=VALUE"):
            bench.parse_setting(bad)
    settings = [f"num_inference_steps=2{extra}" for extra in ("", ",shared_noise=0", ",shared_noise=.5")]
    result = bench.compare(pipe, settings, num_videos=3, seed=2, batch_size=2, out=tmp_path / "levers.json")
    rows = result["settings"]
    assert all(rows[s]["clips"] == 3 for s in settings)
    assert rows[settings[1]]["kept_only_with / only_without"] == [0, 0]
    assert rows[settings[1]]["spurious_strokes"] == rows[settings[0]]["spurious_strokes"]
    assert (tmp_path / "levers.json").is_file()
    resumed = bench.compare(pipe, settings[:1], num_videos=3, seed=2, batch_size=2, out=None, first_clip=2)
    assert resumed["settings"][settings[0]]["clips"] == 1
    demo = bench.demo_strokes(pipe, settings[:2], PROMPT[0])
    assert demo[settings[0]] == demo[settings[1]] and len(demo[settings[0]]) == 2


@pytest.mark.parametrize("options, message", [
    (["--shared-noise", "1.5"], "shared_noise must be in [0, 1]"),
    (["--shared-noise", "0.3", "--stream"], "drop --interpolate, --sampler, --upscale and --shared-noise"),
    (["--eta", "-1"], "--eta must be >= 0, got -1.0"),
    (["--eta", "-1", "--stream"], "--eta must be >= 0, got -1.0"),
])
def test_generate_rejects_bad_shared_noise_and_eta_in_one_line(options, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--prompt", "the digit one moves up", "--steps", "1", *options])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err and message in err, err


class RecordingPipe:
    """Stands in for the shipped pipeline: records the sampling options `generate` passes, returns a blank clip."""
    is_video, superres, calls = True, None, []
    unet = SimpleNamespace(num_frames=8)  # the frames it was trained on

    def __call__(self, prompts, **options):
        self.calls.append(options)
        return torch.zeros(1, 2, 1, 8, 8)  # (B, F, C, H, W)


@pytest.mark.parametrize("options, eta", [([], 1.0), (["--sampler", "dpm++2m"], 0.0), (["--eta", "0"], 0.0),
                                          (["--eta", "0.5"], 0.5)])
def test_generate_samples_with_stochastic_ddim_by_default(options, eta, tmp_path, monkeypatch):
    """eta = 1 is generate's default for DDIM (chosen on validation seed 2); DPM-Solver++ stays deterministic."""
    pipe = RecordingPipe()
    pipe.calls = []
    monkeypatch.setattr(TextToVideoPipeline, "from_pretrained", staticmethod(lambda *args, **kwargs: pipe))
    main(["generate", "--prompt", "the digit one moves up", "--out", str(tmp_path / "clip.gif"), *options])
    assert pipe.calls[0]["eta"] == eta and (tmp_path / "clip.gif").is_file()


def test_generate_streams_with_the_same_eta(tmp_path, monkeypatch):
    import minimagic.streaming

    seen = {}
    monkeypatch.setattr(TextToVideoPipeline, "from_pretrained", staticmethod(lambda *args, **kwargs: RecordingPipe()))
    monkeypatch.setattr(minimagic.streaming, "stream_to_folder",
                        lambda *args, **options: seen.update(options) or torch.zeros(2, 1, 8, 8))  # (F, C, H, W)
    main(["generate", "--prompt", "the digit one moves up", "--stream", "--num-frames", "2",
          "--out", str(tmp_path / "clip.gif")])
    assert seen["eta"] == 1.0


def test_evaluate_passes_eta_and_shared_noise_to_the_clips(monkeypatch):
    from minimagic import evaluate

    seen = {}
    monkeypatch.setattr(evaluate.TextToVideoPipeline, "from_pretrained", staticmethod(lambda directory: "pipe"))
    monkeypatch.setattr(evaluate, "score_t2v", lambda pipe, **options: seen.update(options) or {})
    evaluate.evaluate_t2v("folder", eta=1.0, shared_noise=0.3, per_digit=5)
    assert seen == {"eta": 1.0, "shared_noise": 0.3}
