"""Stable Diffusion v1's U-Net in UNet2D: equal to diffusers' output, one-line errors, the t2i pipeline it makes."""

import csv
import importlib.util
import json
from functools import partialmethod
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import minimagic.clips
from minimagic.__main__ import main
from minimagic.pipeline import TextToVideoPipeline
from minimagic.sd_unet import load_sd_unet
from minimagic.video_unet import VideoUNet

WEIGHTS = "diffusion_pytorch_model.safetensors"


def sd_layout_unet(cross_attention_dim: int = 24):
    """SD v1's UNet2DConditionModel layout (4 levels, attention on the first three, 2 ResBlocks per level)
    at reduced widths, with random non-zero weights everywhere, so that a misplaced tensor shows."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = diffusers.UNet2DConditionModel(
        block_out_channels=(16, 32, 32, 32), layers_per_block=2, cross_attention_dim=cross_attention_dim,
        attention_head_dim=2, norm_num_groups=8, sample_size=16,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    return model.eval()


def convert_script():
    """scripts/convert_sd.py as a module."""
    spec = importlib.util.spec_from_file_location("convert_sd", Path(__file__).parents[1] / "scripts/convert_sd.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.fixture
def sd_unet_folder(tmp_path: Path) -> Path:
    sd_layout_unet().save_pretrained(tmp_path / "sd" / "unet")
    return tmp_path / "sd"


def test_sd_unet_matches_diffusers(sd_unet_folder):
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.UNet2DConditionModel.from_pretrained(sd_unet_folder / "unet").eval()
    unet = load_sd_unet(sd_unet_folder).eval()  # PATH/unet is found; PATH/unet itself works too
    assert load_sd_unet(sd_unet_folder / "unet").config == unet.config
    c = unet.config
    assert (c.channels, c.num_res_blocks, c.attention_levels, c.num_heads) == ((16, 32, 32, 32), 2,
                                                                               (True, True, True, False), 2)
    assert (c.context_dim, c.norm_groups, c.norm_eps, c.time_embed_dim) == (24, 8, 1e-5, 64)
    generator = torch.Generator().manual_seed(1)
    x, context = torch.randn(2, 4, 16, 16, generator=generator), torch.randn(2, 5, 24, generator=generator)
    t = torch.tensor([10, 700])
    with torch.no_grad():
        expected = reference(x, t, encoder_hidden_states=context).sample
        torch.testing.assert_close(unet(x, t, context), expected, atol=1e-4, rtol=0)
        video = VideoUNet.from_unet2d(unet, num_frames=3)  # inflated: each frame is the SD image model
        frames = video(x[:1, None].expand(1, 3, -1, -1, -1), t[:1], context[:1], fps=8.0)
        torch.testing.assert_close(frames[0], expected[:1].expand(3, -1, -1, -1), atol=1e-4, rtol=0)


@pytest.mark.parametrize(("change", "message"), [
    ("drop", r"tensor down_blocks\.1\.attentions\.0\.transformer_blocks\.0\.attn2\.to_v\.weight is missing"),
    ("reshape", r"tensor down_blocks\.1\.attentions\.0\.transformer_blocks\.0\.attn2\.to_v\.weight has shape "
                r"\(32, 20\), expected \(32, 24\)"),
    ("extra", r"unexpected tensor down_blocks\.1\.attentions\.0\.extra\.weight \(1 in all\)"),
])
def test_missing_or_misshaped_tensor_is_named_in_one_line(sd_unet_folder, change, message):
    weights = sd_unet_folder / "unet" / WEIGHTS
    state = load_file(weights)
    name = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v.weight"
    if change == "drop":
        del state[name]
    elif change == "reshape":
        state[name] = state[name][:, :20].contiguous()
    else:
        state["down_blocks.1.attentions.0.extra.weight"] = torch.zeros(1)
    save_file(state, weights)
    with pytest.raises(ValueError, match=message) as error:
        load_sd_unet(sd_unet_folder)
    assert str(weights) in str(error.value) and "\n" not in str(error.value)


def test_missing_folder_and_other_layouts_say_what_to_supply(tmp_path, sd_unet_folder):
    with pytest.raises(FileNotFoundError, match=r"no diffusers U-Net in .*nothing: supply a folder holding Stable"):
        load_sd_unet(tmp_path / "nothing")
    config_path = sd_unet_folder / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "use_linear_projection": True}))  # SD 2's layout
    with pytest.raises(ValueError, match=r"use_linear_projection=True is not Stable Diffusion v1's layout"):
        load_sd_unet(sd_unet_folder)
    config_path.write_text(json.dumps({**config, "up_block_types": ["UpBlock2D"] * 4}))
    with pytest.raises(ValueError, match=r"down/up blocks .* are not Stable Diffusion v1's layout"):
        load_sd_unet(sd_unet_folder)
    config_path.write_text(json.dumps(config))
    (sd_unet_folder / "unet" / WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match=r"diffusion_pytorch_model\.safetensors is missing"):
        load_sd_unet(sd_unet_folder)


def test_convert_script_writes_a_t2i_pipeline_that_t2v_inflates(tmp_path, sd_vae_folder, clip_folder):
    """scripts/convert_sd.py: SD's U-Net + VAE + CLIP -> a t2i pipeline folder that loads and inflates."""
    sd_layout_unet(cross_attention_dim=768).save_pretrained(tmp_path / "sd" / "unet")  # beside sd/vae
    script = convert_script()
    script.main(["--unet", str(tmp_path / "sd"), "--vae", str(sd_vae_folder), "--text-encoder", str(clip_folder),
                 "--out", str(tmp_path / "t2i"), "--image-size", "64"])
    pipe = TextToVideoPipeline.from_pretrained(tmp_path / "t2i")
    assert not pipe.is_video and pipe.image_size == 64 and pipe.text_encoder.dim == 768
    assert pipe.unet.config.gradient_checkpointing  # as the base preset
    unet = load_sd_unet(tmp_path / "sd")
    for name, value in unet.state_dict().items():  # saved in float16
        assert torch.allclose(pipe.unet.state_dict()[name], value, atol=1e-3 * value.abs().max() + 1e-6), name
    video = VideoUNet.from_unet2d(pipe.unet, num_frames=2)
    assert video.config.unet.gradient_checkpointing
    images = pipe(["a"], num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (1, 1, 3, 64, 64)
    with pytest.raises(SystemExit):  # argparse's exit 2, with the one-line error on stderr
        script.main(["--unet", str(tmp_path / "sd"), "--vae", str(sd_vae_folder), "--text-encoder",
                     str(clip_folder), "--out", str(tmp_path / "bad"), "--image-size", "60"])


def test_train_t2v_starts_from_the_converted_sd_pipeline(tmp_path, sd_vae_folder, clip_folder, ucf10_root,
                                                         monkeypatch):
    """The paper's recipe end to end: SD's U-Net + VAE + CLIP -> t2i pipeline -> `train t2v --init` (2 steps
    on real clips, gradient checkpointing on) -> a t2v pipeline whose 2D weights started as SD's."""
    monkeypatch.setattr(minimagic.clips, "CLIPS_PER_VIDEO", 1)  # encode 10 clips, not 40
    monkeypatch.setattr(TextToVideoPipeline, "__call__",  # previews with 2 steps
                        partialmethod(TextToVideoPipeline.__call__, num_inference_steps=2))
    sd_layout_unet(cross_attention_dim=768).save_pretrained(tmp_path / "sd" / "unet")
    convert_script().main(["--unet", str(tmp_path / "sd"), "--vae", str(sd_vae_folder), "--text-encoder",
                           str(clip_folder), "--out", str(tmp_path / "t2i"), "--image-size", "64"])
    main(["train", "t2v", "--preset", "base", "--init", str(tmp_path / "t2i"), "--data", "ucf10", "--data-root",
          str(ucf10_root), "--steps", "2", "--batch-size", "2", "--log-every", "1", "--device", "cpu",
          "--run-dir", str(tmp_path / "run")])
    with open(tmp_path / "run" / "log.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 and all(0 < float(row["loss"]) < 10 for row in rows)
    t2v = TextToVideoPipeline.from_pretrained(tmp_path / "run" / "checkpoint")
    assert t2v.is_video and t2v.text_encoder.dim == 768 and t2v.unet.unet_config.gradient_checkpointing
    sd, trained = load_sd_unet(tmp_path / "sd").state_dict(), t2v.unet.unet.state_dict()
    common = [name for name in sd if name in trained]  # not renamed by inflation: norms, linears of ResBlocks
    assert len(common) > 100
    moved = [name for name in common if not torch.allclose(trained[name], sd[name], atol=0.05)]
    assert len(moved) < len(common) / 10  # two small steps from SD's weights, not a fresh network
