"""The training stages of minimagic, in the order MagicVideo builds them.

vae: the frame autoencoder whose latent space everything else lives in (docs/paper.md §1; vae_stages.py);
t2i: the text-to-image latent U-Net whose 2D weights MagicVideo reuses (docs/paper.md §4);
t2v: that U-Net inflated to video with adaptors and directed temporal attention (docs/paper.md §2-3);
videovae: the VideoVAE decoder that removes frame-to-frame dithering (docs/paper.md §5; vae_stages.py);
interp: the frame interpolation model that fills in frames between keyframes (docs/paper.md §1; interp_stage.py).
Each stage gives `train.train` a model, batches, a loss, a preview and a `save`. They train on Moving
digits, or with `data="ucf10"` and `data_root` on real clips (stage_data.py); `preset="base"` is the paper's
setting at 256x256 with Stable Diffusion's VAE and CLIP's text encoder, both supplied by the user (pretrained.py).
"""

from pathlib import Path

import torch
from torchvision.utils import save_image

from minimagic.data import DATA_DIR
from minimagic.diffusion import DiffusionConfig, GaussianDiffusion
from minimagic.guidance import drop_condition
from minimagic.interp_stage import InterpolationStage
from minimagic.pipeline import TextToVideoPipeline
from minimagic.pretrained import load_clip, load_sd_vae, load_text_encoder
from minimagic.stage_data import MOVING_DIGITS, latent_clips, open_folder
from minimagic.text import TextEncoder
from minimagic.unet import UNet2D, UNetConfig
from minimagic.vae import VAE
from minimagic.vae_stages import VAE_CHECKPOINT, VAEStage, VideoVAEStage
from minimagic.video_unet import VideoUNet

T2I_CHECKPOINT = DATA_DIR / "checkpoints" / "t2i-moving-digits"


class LatentDiffusionStage:
    """Shared by t2i and t2v: eps-prediction loss on pre-encoded latents, with caption dropout for CFG.

    L = E ||eps - eps_theta(z_t, t, tau(y))||^2 (docs/paper.md §6.1); tau(y) -> tau("") with p = cfg_dropout.
    """

    defaults = dict(steps=3000, batch_size=32, lr=5e-4, ema_decay=0.999, warmup=200, preview_every=500)

    videovae = None  # a VideoVAE to ship with the pipeline (kept from a t2v `init`)

    def __init__(self, vae: VAE | str | Path = VAE_CHECKPOINT, num_clips: int = 6000, folder=None,
                 text: TextEncoder | None = None):
        """folder: a VideoFolder to train on (None: Moving digits); text: tau (default: MiniLM)."""
        self.vae = vae if isinstance(vae, VAE) else VAE.from_pretrained(vae)
        self.clips = latent_clips(self.vae, folder, num_clips)
        self.image_size = self.clips["latents"].shape[-1] * self.vae.config.factor  # frames are this wide
        self.preview_fps = float(self.clips["fps"].median())
        self.text = text or TextEncoder()
        self.diffusion = GaussianDiffusion(DiffusionConfig())

    def pipeline(self, model) -> TextToVideoPipeline:
        return TextToVideoPipeline(model, self.vae, self.text, self.diffusion, self.image_size, self.videovae)

    def contexts(self, prompts: list[str], generator: torch.Generator) -> torch.Tensor:
        context, _ = self.text.encode(prompts)  # (B, L, D)
        return drop_condition(context, self.text.uncond(1)[0], self.diffusion.config.cfg_dropout, generator)

    def loss(self, model, batch: dict, generator: torch.Generator) -> torch.Tensor:
        conditions = {name: value for name, value in batch.items() if name != "x0"}  # context (and fps)
        return self.diffusion.to(batch["x0"].device).loss(model, batch["x0"], **conditions)

    def save(self, model, directory: Path, command: str, **info) -> None:
        self.pipeline(model).save_pretrained(directory, command=command, stage=self.name, **info)


class TextToImageStage(LatentDiffusionStage):
    """Stage t2i: the image model eps_theta(z_t, t, tau(y)) on single latent frames, "the digit seven".

    init: our VAE checkpoint; sd_vae / text_encoder: Stable Diffusion's VAE (used instead of init) and a
    Hugging Face text encoder, folders or Hub names; `base` needs both, and a CLIP text encoder."""

    name = "t2i"

    def __init__(self, preset: str = "toy", init: str | Path = VAE_CHECKPOINT, num_clips: int = 6000,
                 data: str = MOVING_DIGITS, data_root: str | None = None, split_file: str | None = None,
                 sd_vae: str | None = None, text_encoder: str | None = None):
        UNetConfig.preset(preset)  # an unknown preset fails now, not after minutes of encoding clips
        if preset == "base" and (sd_vae is None or text_encoder is None):
            raise ValueError("the base preset runs on Stable Diffusion's VAE and a CLIP text encoder: "
                             "pass --sd-vae FOLDER and --text-encoder FOLDER (see minimagic/pretrained.py)")
        folder = open_folder(data, data_root, split_file)
        if preset == "base":
            text = load_clip(text_encoder)
        else:
            text = load_text_encoder(text_encoder) if text_encoder else None
        super().__init__(vae=load_sd_vae(sd_vae) if sd_vae else init, num_clips=num_clips, folder=folder, text=text)
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


class TextToVideoStage(LatentDiffusionStage):
    """Stage t2v: the image U-Net inflated to video (adaptors + directed temporal attention), on clips."""

    name = "t2v"
    defaults = {**LatentDiffusionStage.defaults, "batch_size": 8, "lr": 2e-4}

    def __init__(self, preset: str = "toy", init: str | Path | None = T2I_CHECKPOINT, num_clips: int = 6000,
                 new_lr_scale: float = 5.0, data: str = MOVING_DIGITS, data_root: str | None = None,
                 split_file: str | None = None, **video_options):
        """init: a t2i pipeline (inflated here), a t2v pipeline (trained further, its VideoVAE kept), or None.
        The VAE and text encoder come with init: a `base` t2i pipeline brings Stable Diffusion's and CLIP."""
        UNetConfig.preset(preset)  # an unknown preset fails now, not after minutes of encoding clips
        folder = open_folder(data, data_root, split_file)
        pretrained = TextToVideoPipeline.from_pretrained(init) if init is not None else None
        super().__init__(vae=pretrained.vae if pretrained else VAE_CHECKPOINT, num_clips=num_clips, folder=folder,
                         text=pretrained.text_encoder if pretrained else None)
        num_frames = self.clips["latents"].shape[1]
        self.videovae = pretrained.videovae if pretrained else None
        if pretrained is None:  # the from-scratch ablation: no image-pretrained 2D weights
            c = self.vae.config.latent_channels
            unet = UNet2D(UNetConfig.preset(preset, in_channels=c, out_channels=c, context_dim=self.text.dim))
            self.model = VideoUNet.from_unet2d(unet, num_frames, **video_options)
        elif pretrained.is_video:
            if video_options:
                raise ValueError(f"{init} is a t2v pipeline: its architecture is fixed, drop {sorted(video_options)}")
            self.model = pretrained.unet.train()
        else:
            self.model = VideoUNet.from_unet2d(pretrained.unet, num_frames, **video_options)
        self.new_lr_scale = new_lr_scale if pretrained is not None else 1.0

    def param_groups(self, model: VideoUNet, lr: float) -> list[dict]:
        """The new video layers learn `new_lr_scale` times faster than the reused, already trained 2D weights."""
        groups = model.parameter_groups()
        new = [p for name in ("adaptor", "temporal", "fps") for p in groups[name] if p.requires_grad]
        reused = [p for p in groups["reused"] if p.requires_grad]
        return [{"params": reused, "lr": lr}, {"params": new, "lr": lr * self.new_lr_scale}]

    def batch(self, batch_size: int, generator: torch.Generator) -> dict:
        clip = torch.randint(self.clips["latents"].shape[0], (batch_size,), generator=generator)
        prompts = [self.clips["captions"][i] for i in clip.tolist()]
        return {"x0": self.clips["latents"][clip].float(), "context": self.contexts(prompts, generator),
                "fps": self.clips["fps"][clip].float()}  # v of each clip (docs/paper.md §6.3)

    def preview(self, model, path: Path, generator: torch.Generator) -> None:
        videos = self.pipeline(model)(self.clips["video_prompts"], fps=self.preview_fps,
                                      generator=torch.Generator().manual_seed(0))  # (P, F, C, H, W)
        save_image(videos.flatten(0, 1) * 0.5 + 0.5, path, nrow=videos.shape[1])


STAGES = {
    "vae": VAEStage, "t2i": TextToImageStage, "t2v": TextToVideoStage, "videovae": VideoVAEStage,
    "interp": InterpolationStage,
}
