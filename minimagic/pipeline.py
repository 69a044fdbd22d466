"""MagicVideo's keyframe generation (docs/paper.md §1, stage 1): prompt y -> tau(y) -> DDIM over latents -> frames.

    z_T ~ N(0, I) of shape (B, F, c, h, w)  ->  z_0 by DDIM with classifier-free guidance on
    eps_theta(z_t, t, tau(y), v)  ->  x = D(z_0), decoded frame by frame by the VAE.

A pipeline folder holds the denoiser (`model.safetensors` + `config.json`), its VAE (`vae/`), optionally a
VideoVAE decoder (`videovae/`, docs/paper.md §5) that then decodes instead of the VAE, and the name of its text
encoder, so `TextToVideoPipeline.from_pretrained(dir)` needs nothing else. `interpolate=k` adds the paper's
second stage: the shipped FrameInterpolator (interpolation.py) fills in k frames between keyframes; `upscale=2` the
third: the shipped SuperResolution (superres.py) doubles every frame's size. A folder made by the t2i stage holds an
image U-Net: the pipeline then makes one-frame "videos" (B, 1, C, H, W).
"""

import functools
import inspect
import math
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from minimagic import checkpoint, compilation
from minimagic.diffusion import DiffusionConfig, GaussianDiffusion
from minimagic.guidance import classifier_free_guidance
from minimagic.interpolation import FrameInterpolator
from minimagic.paths import DEFAULT_FPS, INTERP_CHECKPOINT, SUPERRES_CHECKPOINT
from minimagic.pipeline_folder import default_checkpoint, load_pipeline, save_pipeline
from minimagic.streaming import stream_pipeline
from minimagic.superres import SuperResolution
from minimagic.text import TextEncoder
from minimagic.unet import UNet2D, UNetConfig
from minimagic.vae import VAE
from minimagic.video_unet import VideoUNet
from minimagic.videovae import VideoVAE


def checked_batches(call):
    """`pipe(...)`'s guard: finite numbers in, the prompts in slices of `pipe.max_batch_size` one after another
    (memory stays bounded however many there are), and a NaN or inf in the result an error, not a black video."""

    @functools.wraps(call)
    def wrapper(self, prompts: list[str] | str, *args, **kwargs) -> torch.Tensor:
        options = inspect.signature(call).bind(self, prompts, *args, **kwargs).arguments
        for name in ("guidance_scale", "eta", "fps", "shared_noise"):
            if name in options and not math.isfinite(options[name]):
                raise ValueError(f"{name} must be a finite number, got {options[name]}")
        prompts, size = [prompts] if isinstance(prompts, str) else list(prompts), self.max_batch_size
        if len(prompts) <= size:
            out = call(self, prompts, *args, **kwargs)  # (B, F, C, H, W) or latents (B, F, c, h, w)
        else:
            out = torch.cat([call(self, prompts[i : i + size], *args, **kwargs) for i in range(0, len(prompts), size)])
        if not torch.isfinite(out).all():
            raise ValueError("the model produced NaN or inf values: its weights or config are broken")
        return out

    return wrapper


class TextToVideoPipeline:
    """Text encoder + (video) U-Net + sampler + VAE decoder, callable on a list of prompts."""

    max_batch_size = 100  # prompts sampled at once by `pipe(...)`; more go in slices of this many

    def __init__(self, unet: UNet2D | VideoUNet, vae: VAE, text_encoder: TextEncoder,
                 diffusion: GaussianDiffusion | None = None, image_size: int = 64, videovae: VideoVAE | None = None):
        self.unet, self.vae, self.text_encoder, self.videovae = unet, vae, text_encoder, videovae
        self.interpolator: FrameInterpolator | None = None  # loaded on the first `interpolate=k` call
        self.superres: SuperResolution | None = None  # the shipped one, loaded on the first `upscale=2` call
        self.stream_options = {}  # context_t, sink_frames: config.json's stream_* keys (streaming.py)
        self.diffusion = diffusion or GaussianDiffusion(DiffusionConfig())
        self.is_video = isinstance(unet, VideoUNet)
        self.image_size = image_size  # frames are image_size x image_size pixels
        h = image_size // vae.config.factor
        self.latent_size = (vae.config.latent_channels, h, h)  # (c, h, w)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def to(self, device: torch.device | str) -> "TextToVideoPipeline":
        for part in (self.unet, self.vae, self.text_encoder, self.diffusion, self.videovae, self.interpolator,
                     self.superres):
            if part is not None:
                part.to(device)
        return self

    def compile(self) -> "TextToVideoPipeline":
        """torch.compile the denoiser in place (compilation.py): the first call of each shape compiles."""
        compilation.compile_in_place(self.unet)
        return self

    @checked_batches
    @torch.no_grad()
    def __call__(self, prompts: list[str] | str, num_frames: int | None = None, num_inference_steps: int = 25,
                 guidance_scale: float = 4.0, eta: float = 0.0, fps: float = DEFAULT_FPS,
                 generator: torch.Generator | None = None, progress: bool = False, return_latents: bool = False,
                 decoder: str = "auto", interpolate: int = 0, first_frame: torch.Tensor | None = None,
                 sampler: str = "ddim", shared_noise: float = 0.0, upscale: int = 1) -> torch.Tensor:
        """Videos (B, F, C, H, W) in [-1, 1] (or their latents (B, F, c, h, w)) for B prompts; F defaults
        to the frames the model was trained on. Longer clips, and clips from a given `first_frame` (C, H, W)
        in [-1, 1] (image-to-video), are streamed frame after frame in a sliding window (streaming.py): with
        the KV cache for a directed model; a bidirectional one recomputes its window for every new frame (a
        fallback that needs continuation training). `decoder`: "vae" (frame by frame), "videovae", or "auto"
        (the VideoVAE when the pipeline has one and the clip fits it).
        `interpolate=k` fills k frames into every gap between the F keyframes: F + (F - 1) k frames.
        `sampler`: "ddim" or "dpm++2m" (DPM-Solver++); streamed clips are sampled with DDIM. `shared_noise` a:
        the frames' starting noise shares a fraction a of its variance (diffusion.py's mixed noise prior).
        `upscale=2` super-resolves every frame (superres.py): a model trained at 32 -> 64 pixels, applied here at
        64 -> 128 (not measured)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        max_frames = self.unet.num_frames if self.is_video else 1
        num_frames = max_frames if num_frames is None else num_frames
        if num_frames < 1 or (not self.is_video and (num_frames > 1 or first_frame is not None)):
            raise ValueError(f"num_frames must be >= 1 (an image model: 1, no first_frame), got {num_frames}")
        if not 0 <= guidance_scale <= 50:
            raise ValueError(f"guidance_scale must be in [0, 50], got {guidance_scale}")
        if not prompts:
            raise ValueError("give at least one prompt")
        if decoder not in ("auto", "vae", "videovae") or (decoder == "videovae" and self.videovae is None):
            raise ValueError(f"decoder must be 'auto', 'vae' or 'videovae' (if the pipeline has one), got {decoder!r}")
        if upscale not in (1, 2) or (upscale == 2 and return_latents):
            raise ValueError(f"upscale must be 1 or 2 (2 returns frames, not latents), got {upscale}")
        if interpolate and (not self.is_video or num_frames < 2):
            raise ValueError(f"interpolate={interpolate} needs a text-to-video model and num_frames >= 2")
        interpolator = self.frame_interpolator(interpolate) if interpolate else None
        self.unet.eval()
        device, B = self.device, len(prompts)
        context, _ = self.text_encoder.encode(prompts)  # (B, L, D)
        uncond, _ = self.text_encoder.uncond(1)  # (1, L, D) = tau("")
        extra = {"fps": torch.full((B,), float(fps), device=device)} if self.is_video else {}

        def denoise(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return classifier_free_guidance(self.unet, z_t, t, context.to(device), uncond.to(device),
                                            guidance_scale, **extra)

        shape = (B, num_frames, *self.latent_size) if self.is_video else (B, *self.latent_size)
        if first_frame is not None or num_frames > max_frames:
            if sampler != "ddim" or shared_noise:
                raise ValueError(f"streamed clips (first_frame, or more than {max_frames} frames) use DDIM from "
                                 f"independent noise, not {sampler!r} with shared_noise={shared_noise}")
            blocks = stream_pipeline(self, prompts, num_frames, first_frame, num_inference_steps, guidance_scale,
                                     eta, fps, generator)
            latents = torch.cat(list(tqdm(blocks, "streamed blocks", disable=not progress)), dim=1)
        else:
            latents = self.diffusion.to(device).sample(denoise, shape, num_inference_steps, eta=eta, method=sampler,
                                                       generator=generator, device=device, progress=progress,
                                                       shared_noise=shared_noise)
        latents = latents if self.is_video else latents.unsqueeze(1)  # (B, F, c, h, w)
        if interpolator is not None:  # (B, F + (F - 1) k, c, h, w)
            latents = interpolator.interpolate_video(latents, interpolate, context.to(device), num_inference_steps,
                                                     generator)
        if return_latents:
            return latents
        video = self.decode(latents, decoder)
        if upscale == 2:  # MagicVideo's third stage, frame by frame with x_T shared across each clip's frames
            self.superres = self.superres or SuperResolution.from_pretrained(SUPERRES_CHECKPOINT).to(device)
            video = self.superres.upscale(video, num_inference_steps, generator=generator)
        return video

    def decode(self, latents: torch.Tensor, decoder: str = "auto") -> torch.Tensor:
        """Latents (B, F, c, h, w) -> frames (B, F, C, H, W) in [-1, 1] with the chosen decoder."""
        fits = self.videovae is not None and latents.shape[1] <= self.videovae.config.num_frames
        use_videovae = decoder == "videovae" or (decoder == "auto" and fits)
        return (self.videovae if use_videovae else self.vae).decode_video(latents).clamp(-1, 1)

    def frame_interpolator(self, num_between: int) -> FrameInterpolator:
        """The shipped FrameInterpolator, checked against this pipeline's VAE latents and against k."""
        if self.interpolator is None:
            meta = checkpoint.load_meta(INTERP_CHECKPOINT, "interp")
            shipped_vae = VAE.from_pretrained(INTERP_CHECKPOINT / "vae")
            if checkpoint.fingerprint(shipped_vae) != checkpoint.fingerprint(self.vae):
                raise ValueError(f"{INTERP_CHECKPOINT} was trained on the latents of another VAE than this pipeline's")
            if meta["config"]["video_unet"]["unet"]["context_dim"] != self.text_encoder.dim:
                raise ValueError(f"{INTERP_CHECKPOINT} was trained with another text encoder than this pipeline's")
            self.interpolator = FrameInterpolator.from_pretrained(INTERP_CHECKPOINT).to(self.device)
        if not 1 <= num_between <= self.interpolator.max_between:
            raise ValueError(f"interpolate must be in [1, {self.interpolator.max_between}], got {num_between}")
        return self.interpolator

    def save_pretrained(self, directory: str | Path, stage: str | None = None, **info) -> Path:
        """Weights in float16 (a few MB), the configs to rebuild everything, the VAE in `vae/` (pipeline_folder.py)."""
        model_config = {"video_unet": self.unet.config_dict()} if self.is_video else {"unet": asdict(self.unet.config)}
        return save_pipeline(directory, stage or ("t2v" if self.is_video else "t2i"), self.unet, model_config,
                             self.diffusion, self.text_encoder, self.vae, self.image_size, self.videovae, **info)

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None,
                        device: torch.device | str | None = None) -> "TextToVideoPipeline":
        directory = Path(directory) if directory is not None else default_checkpoint()
        parts = load_pipeline(directory, ("t2i", "t2v"))
        if "video_unet" in parts.config:
            unet = VideoUNet.from_config_dict(parts.config["video_unet"])
        else:
            unet = UNet2D(UNetConfig(**parts.config["unet"]))
        checkpoint.load_weights(unet, directory).eval()
        pipe = cls(unet, parts.vae, parts.text_encoder, parts.diffusion, parts.image_size, parts.videovae)
        pipe.stream_options = {k[len("stream_"):]: int(v) for k, v in parts.meta.items() if k.startswith("stream_")}
        return pipe.to(device) if device is not None else pipe
