"""The pretrained parts of the `base` preset, supplied by the user: Stable Diffusion's VAE and CLIP's text encoder.

MagicVideo runs at 256x256 in the latent space of Stable Diffusion's VAE (factor 8, 4 latent channels,
latents scaled by 0.18215: 256x256 frames -> 4x32x32) and conditions on CLIP's per-token text features
(ViT-L/14: 77 tokens of D = 768) (docs/paper.md §1). Neither set of weights can be shipped or downloaded here:
pass folders, e.g. made with `huggingface-cli download stabilityai/sd-vae-ft-mse --local-dir sd-vae` (or the
`vae/` of a Stable Diffusion v1 repository) and `huggingface-cli download openai/clip-vit-large-patch14
--local-dir clip`. With internet access a Hub name (`stabilityai/sd-vae-ft-mse`,
`openai/clip-vit-large-patch14`) works too.
"""

import json
from pathlib import Path

from minimagic.text import TextEncoder
from minimagic.vae import VAE

VAE_HINT = ("supply a folder holding Stable Diffusion's VAE in the diffusers format ([vae/]config.json and "
            "[vae/]diffusion_pytorch_model.safetensors), e.g. from `huggingface-cli download "
            "stabilityai/sd-vae-ft-mse --local-dir sd-vae`")
TEXT_HINT = ("supply a folder holding a Hugging Face text encoder and its tokenizer (for the base preset a CLIP "
             "one, e.g. from `huggingface-cli download openai/clip-vit-large-patch14 --local-dir clip`)")
CLIP_MAX_LENGTH = 77  # Stable Diffusion's text context: 77 CLIP tokens


def _vae_folder(name_or_path: str | Path) -> Path:
    """The folder holding config.json: `PATH/vae`, `PATH` itself, or the `vae/` of a Hub model."""
    path = Path(name_or_path)
    for folder in (path / "vae", path):
        if (folder / "config.json").is_file():
            return folder
    if path.exists():
        raise FileNotFoundError(f"no diffusers VAE in {path}: {VAE_HINT}")
    try:  # not on disk: a Hub name, fetched only with internet access (HF_HUB_OFFLINE=1 fails at once)
        from huggingface_hub import snapshot_download

        hub = Path(snapshot_download(str(name_or_path), allow_patterns=["vae/*", "config.json", "*.safetensors"]))
    except (OSError, ValueError):
        raise FileNotFoundError(f"VAE folder not found: {name_or_path}; {VAE_HINT}") from None
    return hub / "vae" if (hub / "vae" / "config.json").is_file() else hub


def load_sd_vae(name_or_path: str | Path) -> VAE:
    """Stable Diffusion's VAE from a diffusers `AutoencoderKL` folder, loaded by module name into `VAE`.

    The widths come from the folder's config.json (block_out_channels, layers_per_block, norm_num_groups,
    latent_channels, scaling_factor), so SD's (128, 256, 512, 512) and smaller test models load alike."""
    folder = _vae_folder(name_or_path)
    config = json.loads((folder / "config.json").read_text())
    if config.get("_class_name") != "AutoencoderKL":
        raise ValueError(f"{folder} holds a {config.get('_class_name')!r}, not a diffusers AutoencoderKL: {VAE_HINT}")
    weights = folder / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing (only safetensors weights load): {VAE_HINT}")
    return VAE.from_diffusers(
        weights,
        in_channels=config["in_channels"],
        latent_channels=config["latent_channels"],
        channels=tuple(config["block_out_channels"]),
        layers_per_block=config["layers_per_block"],
        norm_groups=config["norm_num_groups"],
        scale_factor=config.get("scaling_factor", 0.18215),
    )


def load_text_encoder(name_or_path: str | Path, max_length: int = 16) -> TextEncoder:
    """tau(y) from a Hugging Face folder (or Hub name), with a one-line error when it is not there."""
    path = Path(name_or_path)
    if path.exists() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"no Hugging Face model in {path}: {TEXT_HINT}")
    try:
        return TextEncoder(str(name_or_path), max_length=max_length)
    except OSError:  # not a folder, and no Hub access (or no such model)
        raise FileNotFoundError(f"text encoder folder not found: {name_or_path}; {TEXT_HINT}") from None


def load_clip(name_or_path: str | Path) -> TextEncoder:
    """tau(y) = CLIP's text transformer: context (B, 77, D), D = 768 for openai/clip-vit-large-patch14."""
    text = load_text_encoder(name_or_path, max_length=CLIP_MAX_LENGTH)
    if not text.model.config.model_type.startswith("clip"):
        raise ValueError(f"{name_or_path} holds a {text.model.config.model_type!r} model, not CLIP: {TEXT_HINT}")
    return text
