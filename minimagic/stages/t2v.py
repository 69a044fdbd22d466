"""Stage t2v: the image U-Net inflated to video, with FrameAdaptors and directed temporal attention
(docs/paper.md §2-4)."""

from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from torchvision.utils import save_image

from minimagic.clips import DataOptions, open_folder
from minimagic.evaluate import evaluate_t2v
from minimagic.paths import T2I_CHECKPOINT, VAE_CHECKPOINT
from minimagic.pipeline import TextToVideoPipeline
from minimagic.stages.latent_diffusion import LatentDiffusionStage
from minimagic.train import option
from minimagic.unet import UNet2D, UNetConfig
from minimagic.video_unet import VideoUNet


@dataclass
class TextToVideoOptions(DataOptions):
    preset: str = option("toy", "model size preset when training from scratch (--init none): tiny, toy or base")
    init: str | None = option(str(T2I_CHECKPOINT), "a t2i pipeline to inflate, a t2v pipeline to train further "
                              "(its VideoVAE kept), or none: from scratch")
    num_clips: int = option(6000, "Moving-digit training clips")
    new_lr_scale: float = option(5.0, "the new video layers learn this many times faster than the 2D weights")
    use_adaptor: bool = option(True, "FrameAdaptors on every conv (false: the no-adaptor ablation)")
    temporal_attention: str = option("directed", "directed, bidirectional or none (ablations)")
    temporal_placement: str = option("parallel", "T-Attn beside S-Attn (parallel) or after it (sequential)")
    fps_conditioning: bool = option(True, "condition on the frame rate v (docs/paper.md §6.3)")
    frame_pos_embed: bool = option(True, "sinusoidal frame index in T-Attn (our addition)")

    def video_options(self) -> dict:
        """The VideoUNet options that differ from their defaults (a t2v init fixes them)."""
        names = ("use_adaptor", "temporal_attention", "temporal_placement", "fps_conditioning", "frame_pos_embed")
        defaults = {f.name: f.default for f in fields(self)}
        return {name: getattr(self, name) for name in names if getattr(self, name) != defaults[name]}


class TextToVideoStage(LatentDiffusionStage):
    """The video model eps_theta(z_t, t, tau(y), v) on latent clips, "the digit seven moves left" at v fps."""

    name, Options = "t2v", TextToVideoOptions
    defaults = {**LatentDiffusionStage.defaults, "batch_size": 8, "lr": 2e-4}

    def __init__(self, options: TextToVideoOptions | None = None, **overrides):
        """The VAE and text encoder come with init: a `base` t2i pipeline brings Stable Diffusion's and CLIP."""
        options = replace(options or TextToVideoOptions(), **overrides)  # e.g. Stage(preset="tiny")
        UNetConfig.preset(options.preset)  # an unknown preset fails now, not after minutes of encoding clips
        folder = open_folder(options.data, options.data_root, options.split_file)
        init, video_options = options.init, options.video_options()
        pretrained = TextToVideoPipeline.from_pretrained(init) if init is not None else None
        super().__init__(pretrained.vae if pretrained else VAE_CHECKPOINT, options.num_clips, folder,
                         pretrained.text_encoder if pretrained else None)
        num_frames = self.clips["latents"].shape[1]
        self.videovae = pretrained.videovae if pretrained else None
        if pretrained is None:  # the from-scratch ablation: no image-pretrained 2D weights
            c = self.vae.config.latent_channels
            unet = UNet2D(UNetConfig.preset(options.preset, in_channels=c, out_channels=c, context_dim=self.text.dim))
            self.model = VideoUNet.from_unet2d(unet, num_frames, **video_options)
        elif pretrained.is_video:
            if video_options:
                raise ValueError(f"{init} is a t2v pipeline: its architecture is fixed, drop {sorted(video_options)}")
            self.model = pretrained.unet.train()
        else:
            self.model = VideoUNet.from_unet2d(pretrained.unet, num_frames, **video_options)
        self.new_lr_scale = options.new_lr_scale if pretrained is not None else 1.0

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

    evaluate = staticmethod(evaluate_t2v)  # the numbers the README reports
