"""Stage t2i: the text-to-image latent U-Net whose 2D weights MagicVideo reuses (docs/paper.md §4)."""

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torchvision.utils import save_image

from minimagic.clips import DataOptions, open_folder
from minimagic.evaluate import evaluate_t2i
from minimagic.paths import VAE_CHECKPOINT
from minimagic.pretrained import load_clip, load_sd_vae, load_text_encoder
from minimagic.stages.latent_diffusion import LatentDiffusionStage
from minimagic.train import option
from minimagic.unet import UNet2D, UNetConfig


@dataclass
class TextToImageOptions(DataOptions):
    preset: str = option("toy", "model size preset: tiny, toy (default) or base")
    init: str = option(str(VAE_CHECKPOINT), "the vae checkpoint whose latents the U-Net denoises")
    num_clips: int = option(6000, "Moving-digit training clips (one random frame of each per draw)")
    sd_vae: str | None = option(None, "Stable Diffusion's VAE, a folder holding diffusers-format vae/ weights "
                                "(instead of --init; needed by --preset base)")
    text_encoder: str | None = option(None, "a Hugging Face text encoder folder (--preset base: a CLIP one, e.g. "
                                      "openai/clip-vit-large-patch14)")


class TextToImageStage(LatentDiffusionStage):
    """The image model eps_theta(z_t, t, tau(y)) on single latent frames, "the digit seven".

    `base` runs on Stable Diffusion's VAE and a CLIP text encoder, both supplied by the user (pretrained.py)."""

    name, Options = "t2i", TextToImageOptions

    def __init__(self, options: TextToImageOptions | None = None, **overrides):
        options = replace(options or TextToImageOptions(), **overrides)  # e.g. Stage(preset="tiny")
        preset = options.preset
        UNetConfig.preset(preset)  # an unknown preset fails now, not after minutes of encoding clips
        if preset == "base" and (options.sd_vae is None or options.text_encoder is None):
            raise ValueError("the base preset runs on Stable Diffusion's VAE and a CLIP text encoder: "
                             "pass --sd-vae FOLDER and --text-encoder FOLDER (see minimagic/pretrained.py)")
        folder = open_folder(options.data, options.data_root, options.split_file)
        if preset == "base":
            text = load_clip(options.text_encoder)
        else:
            text = load_text_encoder(options.text_encoder) if options.text_encoder else None
        vae = load_sd_vae(options.sd_vae) if options.sd_vae else options.init
        super().__init__(vae, options.num_clips, folder, text)
        c = self.vae.config.latent_channels
        self.model = UNet2D(UNetConfig.preset(preset, in_channels=c, out_channels=c, context_dim=self.text.dim))

    def batch(self, batch_size: int, generator: torch.Generator) -> dict:
        latents = self.clips["latents"]  # (N, F, c, h, w)
        clip = torch.randint(latents.shape[0], (batch_size,), generator=generator)
        frame = torch.randint(latents.shape[1], (batch_size,), generator=generator)
        prompts = [self.clips["image_captions"][i] for i in clip.tolist()]
        return {"x0": latents[clip, frame].float(), "context": self.contexts(prompts, generator)}

    def preview(self, model, path: Path, generator: torch.Generator) -> None:
        prompts = self.clips["image_prompts"]
        images = self.pipeline(model)(prompts, generator=torch.Generator().manual_seed(0))[:, 0]  # (P, C, H, W)
        save_image(images * 0.5 + 0.5, path, nrow=len(prompts))

    evaluate = staticmethod(evaluate_t2i)  # the numbers the README reports
