"""Assemble a minimagic t2i pipeline from Stable Diffusion v1's U-Net, VAE and CLIP: the paper's starting point.

MagicVideo inflates a pre-trained text-to-image model (docs/paper.md §4). This writes one, as a t2i pipeline
folder (U-Net in float16, SD's VAE in `vae/`, the CLIP folder's path), that `train t2v --init` inflates:

    huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5 --include "unet/*" "vae/*" --local-dir sd15
    huggingface-cli download openai/clip-vit-large-patch14 --local-dir clip
    python scripts/convert_sd.py --unet sd15 --vae sd15 --text-encoder clip --out runs/t2i-sd15
    python -m minimagic train t2v --preset base --init runs/t2i-sd15 --data ucf10-256 --data-root UCF-101

The U-Net gets the base preset's gradient checkpointing (bench/gpu_memory.py says what it saves).
"""

import argparse
import shlex
import sys
from pathlib import Path

from minimagic.diffusion import DiffusionConfig, GaussianDiffusion
from minimagic.pipeline import TextToVideoPipeline
from minimagic.pretrained import load_clip, load_sd_vae
from minimagic.sd_unet import load_sd_unet
from minimagic.unet import UNetConfig


def convert(unet: str | Path, vae: str | Path, text_encoder: str | Path, out: str | Path, image_size: int = 256,
            command: str = "") -> Path:
    """Load the three parts, check that they fit together, save the t2i pipeline to `out`."""
    checkpointing = UNetConfig.preset("base").gradient_checkpointing
    model, vae, text = load_sd_unet(unet, gradient_checkpointing=checkpointing), load_sd_vae(vae), load_clip(
        Path(text_encoder).resolve() if Path(text_encoder).exists() else text_encoder)  # a path that works anywhere
    if model.config.context_dim != text.dim:
        raise ValueError(f"the U-Net cross-attends to D={model.config.context_dim}, the text encoder gives {text.dim}")
    if model.config.in_channels != vae.config.latent_channels:
        raise ValueError(f"the U-Net takes {model.config.in_channels} channels, the VAE makes "
                         f"{vae.config.latent_channels}")
    if image_size % vae.config.factor:
        raise ValueError(f"image_size {image_size} is not a multiple of the VAE's factor {vae.config.factor}")
    # SD v1 was trained with DiffusionConfig's defaults: scaled_linear betas 0.00085..0.012, eps prediction
    pipe = TextToVideoPipeline(model, vae, text, GaussianDiffusion(DiffusionConfig()), image_size)
    return pipe.save_pretrained(out, stage="t2i", command=command)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unet", required=True, help="SD v1 folder holding unet/ (or the unet/ folder itself)")
    parser.add_argument("--vae", required=True, help="SD v1 folder holding vae/ (or e.g. stabilityai/sd-vae-ft-mse)")
    parser.add_argument("--text-encoder", required=True, help="CLIP folder, e.g. openai/clip-vit-large-patch14")
    parser.add_argument("--out", required=True, help="the t2i pipeline folder to write")
    parser.add_argument("--image-size", type=int, default=256, help="frame size (MagicVideo: 256, latents 32x32)")
    args = parser.parse_args(argv)
    command = "python scripts/convert_sd.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        out = convert(args.unet, args.vae, args.text_encoder, args.out, args.image_size, command)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"wrote the t2i pipeline {out}: inflate it with `python -m minimagic train t2v --init {out} ...`")


if __name__ == "__main__":
    main()
