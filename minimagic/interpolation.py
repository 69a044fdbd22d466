"""MagicVideo's second stage (docs/paper.md §1): a latent diffusion model that fills in frames between keyframes.

For two neighbouring keyframe latents z^a, z^b it generates the k latents in between. The denoiser sees
the k + 2 frames [a, 1, ..., k, b], each as the channel concatenation

    input_i = [z_t,i ; zhat_i ; m_i]   (c + c + 1 channels),   zhat_i = (1 - a_i) z^a + a_i z^b,  a_i = i / (k + 1),

of the noisy latent, the keyframes blended to frame i's position (z^a and z^b themselves at the ends) and
the mask m_i (1 for a and b, 0 in between). The blend hands every frame both keyframes at full latent
resolution, where temporal attention (only at the U-Net's coarser levels) cannot copy fine detail. The
network is the keyframe model's VideoUNet (adaptors, temporal attention, FPS condition v = the output frame
rate) with its input conv widened from c to 2c + 1 channels. `from_keyframe_model` starts from the trained
text-to-video model, the new input channels zero. One change: an in-between frame must see the keyframe
*after* it, so the temporal attention here is bidirectional (the causal mask has no weights, so the trained
ones load as they are). The keyframes' own z_t is replaced by their clean latents, so the network sees the
same input in training and in sampling; the loss is eps-prediction on the in-between frames only.
"""

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import repeat
from torch import nn

from minimagic import checkpoint
from minimagic.diffusion import DiffusionConfig, GaussianDiffusion
from minimagic.paths import DEFAULT_FPS
from minimagic.video_unet import VideoUNet

KEYFRAME_FPS = DEFAULT_FPS  # frame rate of the keyframes (the t2v model's clips); k in-betweens give 8 (k + 1)


class FrameInterpolator(nn.Module):
    """eps_theta([z_t ; zhat ; m], t, tau(y), v) on the k + 2 frames from keyframe a to keyframe b."""

    def __init__(self, unet: VideoUNet, diffusion: GaussianDiffusion | None = None, max_between: int | None = None):
        """max_between: the most in-between frames k it accepts (trained for), at most unet.num_frames - 2."""
        super().__init__()
        c_in, c = unet.unet_config.in_channels, unet.unet_config.out_channels
        if c_in != 2 * c + 1:
            raise ValueError(f"the interpolation U-Net needs 2c + 1 = {2 * c + 1} input channels, got {c_in}")
        if unet.config.temporal_attention == "directed":
            raise ValueError("in-between frames must see the next keyframe: use bidirectional temporal attention")
        max_between = unet.num_frames - 2 if max_between is None else max_between
        if not 1 <= max_between <= unet.num_frames - 2:
            raise ValueError(f"max_between must be in [1, {unet.num_frames - 2}] for {unet.num_frames} frames")
        self.unet, self.latent_channels, self.max_between = unet, c, max_between
        self.diffusion = diffusion or GaussianDiffusion(DiffusionConfig())

    @classmethod
    def from_keyframe_model(cls, keyframe_unet: VideoUNet, diffusion: GaussianDiffusion | None = None,
                            max_between: int | None = None) -> "FrameInterpolator":
        """The trained t2v VideoUNet with a widened input conv (the new channels zero): training starts from
        the keyframe model, which at t = 0 already denoises every frame on its own."""
        if keyframe_unet.config.temporal_attention == "none":
            raise ValueError("the keyframe model has no temporal attention: the interpolator needs it")
        c = keyframe_unet.unet_config.in_channels
        config = replace(keyframe_unet.config, unet=replace(keyframe_unet.unet_config, in_channels=2 * c + 1),
                         temporal_attention="bidirectional")
        unet = VideoUNet(config)
        state = keyframe_unet.state_dict()
        for name, tensor in unet.state_dict().items():
            if state[name].shape != tensor.shape:  # the input conv (C0, c, 3, 3) -> (C0, 2c + 1, 3, 3)
                state[name] = torch.cat([state[name], tensor.new_zeros(tensor.shape[0], c + 1, *tensor.shape[2:])], 1)
        unet.load_state_dict(state)
        return cls(unet, diffusion, max_between)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor, known: torch.Tensor,
                mask: torch.Tensor, fps: torch.Tensor | None = None) -> torch.Tensor:
        """x_t, known = zhat (B, F, c, h, w), mask (B, F) bool (True = given keyframe) -> eps (B, F, c, h, w)."""
        if known.shape != x_t.shape or mask.shape != x_t.shape[:2]:
            raise ValueError(f"known must be {tuple(x_t.shape)} and mask {tuple(x_t.shape[:2])}, "
                             f"got {tuple(known.shape)} and {tuple(mask.shape)}")
        m = mask[:, :, None, None, None].to(x_t.dtype).expand(-1, -1, 1, *x_t.shape[-2:])  # (B, F, 1, h, w)
        x_t = torch.where(m.bool(), known, x_t)  # keyframes enter clean, in training and in sampling alike
        return self.unet(torch.cat([x_t, known, m], dim=2), t, context, fps=fps)  # in: (B, F, 2c + 1, h, w)

    def conditioning(self, keyframes: torch.Tensor, num_between: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keyframes (B, 2, c, h, w) -> zhat (B, k + 2, c, h, w), their blend, and the mask (B, k + 2)."""
        if keyframes.ndim != 5 or keyframes.shape[1] != 2 or keyframes.shape[2] != self.latent_channels:
            raise ValueError(f"keyframes must be two latent frames (B, 2, {self.latent_channels}, h, w), "
                             f"got {tuple(keyframes.shape)}")
        if not 1 <= num_between <= self.max_between:
            raise ValueError(f"this interpolator fills 1 to {self.max_between} frames between keyframes, "
                             f"got {num_between}")
        B, k = keyframes.shape[0], num_between
        a = torch.linspace(0, 1, k + 2, device=keyframes.device, dtype=keyframes.dtype)[None, :, None, None, None]
        known = (1 - a) * keyframes[:, :1] + a * keyframes[:, 1:]  # (B, k + 2, c, h, w), a_i = i / (k + 1)
        mask = torch.zeros(B, k + 2, dtype=torch.bool, device=keyframes.device)
        mask[:, [0, -1]] = True
        return known, mask  # (B, k + 2, c, h, w), (B, k + 2)

    def frame_rate(self, batch_size: int, num_between: int, device: torch.device) -> torch.Tensor | None:
        """v of the output clip: KEYFRAME_FPS * (k + 1), or None for a model without FPS conditioning."""
        if not self.unet.config.fps_conditioning:
            return None
        return torch.full((batch_size,), KEYFRAME_FPS * (num_between + 1), device=device)

    def loss(self, x0: torch.Tensor, context: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """|| eps - eps_theta ||^2 over the in-between frames of clips x0 (B, k + 2, c, h, w)."""
        B, k = x0.shape[0], x0.shape[1] - 2
        known, mask = self.conditioning(x0[:, [0, -1]], k)
        draw = generator.device if generator is not None else x0.device
        t = torch.randint(0, self.diffusion.num_timesteps, (B,), generator=generator, device=draw).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=draw).to(x0.device, x0.dtype)  # eps
        x_t = self.diffusion.to(x0.device).q_sample(x0, t, noise)
        eps = self(x_t, t, context, known, mask, self.frame_rate(B, k, x0.device))
        return F.mse_loss(eps[:, 1:-1], noise[:, 1:-1])

    @torch.no_grad()
    def interpolate(self, keyframes: torch.Tensor, num_between: int, context: torch.Tensor,
                    num_inference_steps: int = 25, generator: torch.Generator | None = None) -> torch.Tensor:
        """Keyframes (B, 2, c, h, w) -> (B, k + 2, c, h, w): keyframe a, k generated latents, keyframe b."""
        known, mask = self.conditioning(keyframes, num_between)
        B, device = known.shape[0], keyframes.device
        fps = self.frame_rate(B, num_between, device)

        def denoise(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self(z_t, t, context, known, mask, fps)

        z = self.diffusion.to(device).sample(denoise, tuple(known.shape), num_inference_steps,
                                             generator=generator, device=device)
        return torch.where(mask[:, :, None, None, None], known, z)  # the keyframes are given, never redrawn

    def interpolate_video(self, latents: torch.Tensor, num_between: int, context: torch.Tensor,
                          num_inference_steps: int = 25, generator: torch.Generator | None = None) -> torch.Tensor:
        """F keyframe latents (B, F, c, h, w) -> (B, F + (F - 1) k, c, h, w), all F - 1 gaps in one batch."""
        if latents.ndim != 5 or latents.shape[1] < 2:
            raise ValueError(f"need two or more keyframes (B, F >= 2, c, h, w), got {tuple(latents.shape)}")
        B, num_frames = latents.shape[:2]
        pairs = torch.stack([latents[:, :-1], latents[:, 1:]], dim=2).flatten(0, 1)  # (B*(F-1), 2, c, h, w)
        context = repeat(context, "b l d -> (b p) l d", p=num_frames - 1)
        filled = self.interpolate(pairs, num_between, context, num_inference_steps, generator)
        filled = filled.unflatten(0, (B, num_frames - 1))  # (B, F-1, k+2, c, h, w)
        body = filled[:, :, :-1].flatten(1, 2)  # (B, (F-1)(k+1), c, h, w): each keyframe, then its in-betweens
        return torch.cat([body, latents[:, -1:]], dim=1)  # (B, F + (F-1) k, c, h, w)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "FrameInterpolator":
        config = checkpoint.load_meta(directory, "interp")["config"]
        model = cls(VideoUNet.from_config_dict(config["video_unet"]),
                    GaussianDiffusion(DiffusionConfig(**config["diffusion"])), config["max_between"])
        return checkpoint.load_weights(model, directory).eval()
