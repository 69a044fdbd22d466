"""MagicVideo's VideoVAE (v2, docs/paper.md §5): the image VAE's decoder with directed temporal attention layers.

Decoding each latent frame on its own lets pixels shimmer from frame to frame ("pixel dithering"). The
VideoVAE keeps the image VAE's encoder, frozen, so the latent space and the diffusion model are unchanged,
and gives the decoder "two temporal-directed attention layers" [docs/paper.md §5]. Where they go is not known; we
put one after the decoder's mid block and one after its last up block (docs/paper.md §9 #19), each a residual
branch h + T-Attn(h) whose output projection starts at zero: at initialisation the VideoVAE decodes exactly
like the image VAE, frame by frame.
"""

import copy
from dataclasses import asdict, dataclass

import torch
from einops import rearrange
from torch import nn

from minimagic import checkpoint
from minimagic.temporal_attention import DirectedTemporalAttention
from minimagic.vae import VAE, VAEConfig

HEAD_WIDTH = 16  # channels per attention head of the temporal layers


@dataclass
class VideoVAEConfig:
    vae: VAEConfig
    num_frames: int = 8  # max frames F the temporal layers accept
    directed: bool = True  # False: bidirectional temporal attention (an ablation)

    def __post_init__(self):
        if isinstance(self.vae, dict):  # from a checkpoint's config.json
            self.vae = VAEConfig(**self.vae)
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")


class VideoVAE(nn.Module):
    """Frozen image encoder + temporally aware decoder: decode_video((B, F, c, h, w)) -> (B, F, C, H, W)."""

    def __init__(self, config: VideoVAEConfig, vae: VAE | None = None):
        super().__init__()
        self.config = config
        self.vae = vae if vae is not None else VAE(config.vae)
        self.vae.encoder.requires_grad_(False)  # the latent space stays the image VAE's
        self.vae.quant_conv.requires_grad_(False)
        self.temporal = nn.ModuleDict({
            name: DirectedTemporalAttention(channels, max(1, channels // HEAD_WIDTH), config.num_frames,
                                            directed=config.directed)
            for name, channels in (("mid", config.vae.channels[-1]), ("levels", config.vae.channels[0]))
        })

    @classmethod
    def from_vae(cls, vae: VAE, num_frames: int = 8, **options) -> "VideoVAE":
        """Extend a trained image VAE (deep-copied, so `vae` stays usable on its own)."""
        vae = copy.deepcopy(vae)
        return cls(VideoVAEConfig(vae.config, num_frames, **options), vae)

    def encode_video(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The image VAE's encoder, unchanged: (B, F, C, H, W) -> scaled latents (B, F, c, h, w)."""
        return self.vae.encode_video(video, generator)

    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, F, c, h, w) -> video (B, F, C, H, W); frame i sees latents of frames <= i."""
        if latents.ndim != 5 or latents.shape[2] != self.config.vae.latent_channels:
            raise ValueError(f"VideoVAE.decode_video expects (B, F, {self.config.vae.latent_channels}, h, w), "
                             f"got {tuple(latents.shape)}")
        B, F = latents.shape[:2]
        if F > self.config.num_frames:
            raise ValueError(f"this VideoVAE decodes at most {self.config.num_frames} frames, got {F}")

        def temporal(name: str, h: torch.Tensor) -> torch.Tensor:  # h (B*F, C', H', W')
            return h + self.temporal[name](h.unflatten(0, (B, F))).flatten(0, 1)  # h + T-Attn(h)

        decoder = self.vae.decoder  # its layers in its own order, with a temporal layer after two of them
        z = rearrange(latents / self.config.vae.scale_factor, "b f c h w -> (b f) c h w")
        h = temporal("mid", decoder.mid_block(decoder.conv_in(self.vae.post_quant_conv(z))))
        for level in decoder.up_blocks:
            h = level(h)
        h = temporal("levels", h)  # (B*F, C0, H, W)
        frames = decoder.conv_out(nn.functional.silu(decoder.conv_norm_out(h)))  # (B*F, C, H, W)
        return rearrange(frames, "(b f) c h w -> b f c h w", b=B)

    def decode_frames_alone(self, latents: torch.Tensor) -> torch.Tensor:
        """The ablation of the temporal context: (B, F, c, h, w) -> (B, F, C, H, W), every frame decoded as a clip
        of its own, so that the temporal layers run but see no other frame."""
        frames = self.decode_video(rearrange(latents, "b f c h w -> (b f) 1 c h w"))  # (B*F, 1, C, H, W)
        return rearrange(frames, "(b f) 1 c h w -> b f c h w", b=latents.shape[0])

    def save_pretrained(self, directory, **info) -> None:
        config = {**asdict(self.config), "vae": asdict(self.config.vae)}
        checkpoint.save_checkpoint(directory, self.state_dict(), "videovae", config, **info)

    @classmethod
    def from_pretrained(cls, directory) -> "VideoVAE":
        model = cls(VideoVAEConfig(**checkpoint.load_meta(directory, "videovae")["config"]))
        return checkpoint.load_weights(model, directory).eval()
