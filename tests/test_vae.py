"""The frame VAE: shapes, the KL term, the shipped checkpoint's quality, diffusers parity, errors."""

from pathlib import Path

import pytest
import torch

from minimagic.data import MovingDigits
from minimagic.metrics import psnr
from minimagic.vae import VAE, DiagonalGaussian, VAEConfig

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "vae-moving-digits"


@pytest.mark.parametrize("preset, channels, size", [("tiny", 1, 16), ("toy", 1, 64), ("sd", 3, 32)])
def test_shapes_for_every_preset(preset, channels, size):
    vae = VAE(VAEConfig.preset(preset)).eval()
    factor = {"tiny": 2, "toy": 4, "sd": 8}[preset]
    assert vae.config.factor == factor
    x = torch.rand(2, channels, size, size) * 2 - 1
    with torch.no_grad():
        posterior = vae.encode(x)
        assert posterior.mean.shape == (2, 4, size // factor, size // factor)
        assert vae.decode(posterior.sample()).shape == x.shape


def test_video_encode_decode_shapes_and_scale_factor_applied_once():
    vae = VAE(VAEConfig.preset("tiny", scale_factor=0.5)).eval()
    video = torch.rand(2, 3, 1, 16, 16) * 2 - 1  # (B, F, C, H, W)
    with torch.no_grad():
        latents = vae.encode_video(video)
        assert latents.shape == (2, 3, 4, 8, 8)
        frame = vae.encode(video[:, 1]).mode() * 0.5
        assert torch.allclose(latents[:, 1], frame, atol=1e-6)
        assert torch.allclose(vae.decode_video(latents)[:, 1], vae.decode(frame / 0.5), atol=1e-6)


def test_kl_is_zero_for_a_standard_normal_posterior_and_positive_otherwise():
    moments = torch.zeros(3, 8, 4, 4)  # mean 0, logvar 0
    assert torch.allclose(DiagonalGaussian(moments).kl(), torch.zeros(3))
    moments[:, 0] = 1.0
    assert (DiagonalGaussian(moments).kl() > 0).all()


def test_sample_is_seeded_and_mode_is_the_mean():
    posterior = DiagonalGaussian(torch.randn(2, 8, 4, 4))
    a = posterior.sample(torch.Generator().manual_seed(0))
    b = posterior.sample(torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, posterior.mode())


def test_shipped_checkpoint_reconstructs_held_out_digits():
    vae = VAE.from_pretrained(SHIPPED)
    assert vae.config.factor == 4 and vae.config.latent_channels == 4
    held_out = MovingDigits("test", image_mode=True, length=256)
    x = torch.stack([held_out[i]["image"] for i in range(len(held_out))])  # (256, 1, 64, 64)
    with torch.no_grad():
        z = vae.encode(x).mode()
        recon = vae.decode(z).clamp(-1, 1)
    assert psnr(recon, x)[1] >= 28.0
    scaled = z * vae.config.scale_factor
    assert 0.6 < scaled.std() < 1.6  # the scale factor makes latents roughly unit variance


def test_diffusers_autoencoder_converts_exactly():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    reference = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
    ).eval()
    for p in reference.parameters():
        p.data.normal_(0, 0.2)  # random non-zero weights everywhere
    vae = VAE.from_diffusers(reference.state_dict(), channels=(8, 16), layers_per_block=1, norm_groups=4)
    x, z = torch.randn(2, 3, 16, 16), torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert torch.allclose(vae.encode(x).mean, reference.encode(x).latent_dist.mean, atol=1e-4)
        assert torch.allclose(vae.decode(z), reference.decode(z).sample, atol=1e-4)
    with pytest.raises(ValueError, match="not a diffusers AutoencoderKL"):
        VAE.from_diffusers(reference.state_dict())  # the full sd preset does not fit these tensors


def test_bad_inputs_are_refused():
    vae = VAE(VAEConfig.preset("tiny"))
    with pytest.raises(ValueError, match="divisible by 2"):
        vae.encode(torch.zeros(1, 1, 15, 16))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        vae.encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        vae.decode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="unknown VAE preset"):
        VAEConfig.preset("huge")
    with pytest.raises(ValueError, match="norm_groups"):
        VAEConfig(channels=(10, 20), norm_groups=8)


def test_save_load_round_trip_and_checkpoint_errors(tmp_path):
    vae = VAE(VAEConfig.preset("tiny", scale_factor=0.7))
    vae.save_pretrained(tmp_path / "vae", command="test")
    loaded = VAE.from_pretrained(tmp_path / "vae")
    assert loaded.config == vae.config
    for a, b in zip(vae.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match="not found"):
        VAE.from_pretrained(tmp_path / "missing")
    (tmp_path / "vae" / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        VAE.from_pretrained(tmp_path / "vae")
