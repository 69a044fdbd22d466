"""The base preset's user-supplied parts: Stable Diffusion's VAE loaded by name, CLIP as tau(y), errors."""

import json

import pytest
import torch

from minimagic.pretrained import load_clip, load_sd_vae
from minimagic.text import default_model_path


def test_sd_vae_folder_loads_by_name_and_matches_diffusers(sd_vae_folder):
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.AutoencoderKL.from_pretrained(sd_vae_folder / "vae").eval()
    vae = load_sd_vae(sd_vae_folder)  # PATH/vae/ is found; PATH/vae itself works too
    assert load_sd_vae(sd_vae_folder / "vae").config == vae.config
    assert (vae.config.factor, vae.config.latent_channels, vae.config.in_channels) == (8, 4, 3)
    assert vae.config.scale_factor == pytest.approx(0.18215) and vae.config.channels == (8, 16, 16, 16)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        posterior = reference.encode(x).latent_dist
        assert torch.allclose(vae.encode(x).mean, posterior.mean, atol=1e-4)
        assert torch.allclose(vae.decode(posterior.mean), reference.decode(posterior.mean).sample, atol=1e-4)
        latents = vae.encode_video(x.unsqueeze(0))  # (1, 2, 4, 8, 8)
    assert latents.shape == (1, 2, 4, 8, 8)
    assert torch.allclose(latents[0], posterior.mean * 0.18215, atol=1e-4)


def test_clip_folder_gives_77_tokens_of_768(clip_folder):
    text = load_clip(clip_folder)
    context, mask = text.encode(["playing guitar", ""])
    assert context.shape == (2, 77, 768) and text.dim == 768 and mask.shape == (2, 77)
    assert mask[0].sum() == len("playing guitar") - 1 + 2  # one token per character (no space), plus BOS/EOS
    assert not torch.allclose(context[0], context[1])


def test_missing_or_wrong_weights_say_what_to_supply(tmp_path, sd_vae_folder):
    with pytest.raises(FileNotFoundError, match=r"VAE folder not found: .*no_vae; supply a folder holding Stable"):
        load_sd_vae(tmp_path / "no_vae")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no diffusers VAE in .*empty: supply"):
        load_sd_vae(tmp_path / "empty")
    (sd_vae_folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"diffusion_pytorch_model\.safetensors is missing"):
        load_sd_vae(sd_vae_folder)
    (tmp_path / "tiny" / "vae").mkdir(parents=True)
    (tmp_path / "tiny" / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderTiny"}))
    with pytest.raises(ValueError, match="'AutoencoderTiny', not a diffusers AutoencoderKL"):
        load_sd_vae(tmp_path / "tiny")
    with pytest.raises(FileNotFoundError, match=r"text encoder folder not found: .*no_clip; supply a folder holding"):
        load_clip(tmp_path / "no_clip")
    with pytest.raises(FileNotFoundError, match=r"no Hugging Face model in .*empty"):
        load_clip(tmp_path / "empty")
    with pytest.raises(ValueError, match="holds a 'bert' model, not CLIP"):
        load_clip(default_model_path())
