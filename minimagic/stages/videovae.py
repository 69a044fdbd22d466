"""Stage videovae: the VideoVAE decoder that removes frame-to-frame dithering (docs/paper.md §5)."""

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from minimagic import checkpoint
from minimagic.clips import encode_clips
from minimagic.data import MovingDigits
from minimagic.evaluate import evaluate_videovae
from minimagic.paths import T2V_CHECKPOINT, VAE_CHECKPOINT
from minimagic.pipeline import TextToVideoPipeline
from minimagic.sdedit import PairSettings, make_pairs
from minimagic.train import Stage, option
from minimagic.vae import VAE
from minimagic.videovae import VideoVAE


@dataclass
class VideoVAEOptions:
    init: str = option(str(VAE_CHECKPOINT), "the vae checkpoint whose decoder becomes the VideoVAE's, or a "
                       "videovae checkpoint to train further")
    temporal_weight: float = option(1.0, "weight w of the frame-difference loss term")
    latent_noise: float = option(0.0, "the largest std of the per-frame noise added to the training latents, like "
                                 "a sampler's residual error (0: none)")
    generated_pairs: int = option(0, "training clips 0..N-1 whose latents are also denoised SDEdit-style by the "
                                  "--pairs-t2v model (sdedit.py, made once and cached), then decoded to the real "
                                  "clip (0: none)")
    pair_fraction: float = option(0.5, "the share of each batch drawn from the generated pairs")
    pairs_t2v: str = option(str(T2V_CHECKPOINT), "the text-to-video model that denoises the pairs' latents")
    pair_t_low: int = option(200, "the pairs' latents are noised to a timestep of the sampler's grid in "
                             "[pair_t_low, pair_t_high]")
    pair_t_high: int = option(400, "see pair_t_low")
    num_clips: int = option(6000, "Moving-digit training clips")
    directed: bool = option(True, "directed (causal) temporal attention; false: bidirectional (an ablation)")
    clamped_loss: bool = option(False, "the loss compares the decoding clamped to [-1, 1], as it is shown: black "
                                "may sit below -1, where small latent errors stay invisible")
    temporal_only: bool = option(False, "train only the temporal layers, the per-frame decoder frozen: what the "
                                 "VideoVAE gains must then come from the other frames")


def frame_differences(video: torch.Tensor) -> torch.Tensor:
    """x_{i+1} - x_i along the frame axis: (B, F, C, H, W) -> (B, F-1, C, H, W)."""
    return video[:, 1:] - video[:, :-1]


class VideoVAEStage(Stage):
    """Fine-tune the VideoVAE decoder on clips (encoder frozen): loss = |D(z + s eps) - x|^2 + w |dD - dx|^2,
    where d is the difference between consecutive frames: the temporal term penalises flicker. With
    `latent_noise` > 0, the decoder sees latents like a sampler's, which are off the encoder's by a residual
    error: eps ~ N(0, I) drawn anew for every frame, s ~ U(0, latent_noise) per clip. Noise that differs
    from frame to frame is what the temporal layers can average away by looking at earlier frames. With
    `generated_pairs` N > 0, a share `pair_fraction` of each batch is latents of training clips noised and
    denoised by the text-to-video model (sdedit.py): they carry a sampler's errors, and the decoder learns to
    decode them to the real clip. With `clamped_loss`, both terms see clamp(D(z), -1, 1), what the pipeline
    shows: nothing pulls the background up to exactly -1, so the decoder can keep it below, out of sight of a
    sampler's small errors (docs/paper.md §10)."""

    name, Options = "videovae", VideoVAEOptions
    defaults = dict(steps=3000, batch_size=4, lr=2e-3, ema_decay=0.999, warmup=50, preview_every=500)

    def __init__(self, options: VideoVAEOptions | None = None, **overrides):
        options = replace(options or VideoVAEOptions(), **overrides)  # e.g. Stage(preset="tiny")
        if options.latent_noise < 0:
            raise ValueError(f"latent_noise must be >= 0, got {options.latent_noise}")
        if not 0 <= options.generated_pairs <= options.num_clips or not 0 < options.pair_fraction <= 1:
            raise ValueError(f"need 0 <= generated_pairs <= num_clips ({options.num_clips}) and pair_fraction in "
                             f"(0, 1], got {options.generated_pairs} and {options.pair_fraction}")
        pairs = PairSettings(options.generated_pairs, options.pair_t_low, options.pair_t_high) \
            if options.generated_pairs else None  # checked before any clip is encoded
        if checkpoint.load_meta(options.init).get("stage") == "videovae":
            if not options.directed:
                raise ValueError(f"{options.init} is a VideoVAE: its architecture is fixed, drop ['directed']")
            self.model = VideoVAE.from_pretrained(options.init).train()
        else:
            self.model = VideoVAE.from_vae(VAE.from_pretrained(options.init), directed=options.directed)
        if options.temporal_only:
            self.model.vae.requires_grad_(False)  # only self.model.temporal learns
        self.temporal_weight, self.latent_noise = options.temporal_weight, options.latent_noise
        self.clamped_loss = options.clamped_loss
        vae = self.model.vae  # its encoder is the frozen one of the image VAE
        self.latents = encode_clips(vae, "train", options.num_clips)["latents"]  # (N, F, c, h, w)
        self.videos = MovingDigits("train", length=options.num_clips, num_frames=self.latents.shape[1])
        self.held_out = MovingDigits("test", length=2, num_frames=self.latents.shape[1])
        self.pair_fraction, self.pairs = options.pair_fraction, None
        if pairs is not None:
            self.pairs = self.generated_pairs(options.pairs_t2v, pairs)  # (N', F, c, h, w)

    def generated_pairs(self, t2v: str, settings: PairSettings) -> torch.Tensor:
        """The SDEdit latents (sdedit.py) of training clips 0..N-1, made by the t2v model in the latent space of
        this VideoVAE's encoder."""
        pipe = TextToVideoPipeline.from_pretrained(t2v)
        if any(not torch.equal(v, pipe.vae.state_dict()[k]) for k, v in self.model.vae.encoder.state_dict(
                prefix="encoder.").items()):
            raise ValueError(f"{t2v} was trained on another VAE's latents than this VideoVAE's encoder makes")
        latents = make_pairs(pipe, settings)["latents"]  # (N', F', c, h, w)
        if latents.shape[1:] != self.latents.shape[1:]:
            raise ValueError(f"{t2v} makes latents {tuple(latents.shape[1:])}, the clips have "
                             f"{tuple(self.latents.shape[1:])}")
        return latents

    def batch(self, batch_size: int, generator: torch.Generator) -> dict:
        index = torch.randint(len(self.videos), (batch_size,), generator=generator)
        latents = self.latents[index].float()  # (B, F, c, h, w)
        if self.pairs is not None:  # a share of the clips: a generated pair's latents, decoded to its real clip
            paired = torch.rand(batch_size, generator=generator) < self.pair_fraction  # (B,)
            pair_index = torch.randint(len(self.pairs), (batch_size,), generator=generator)  # clip i is pair i
            index = torch.where(paired, pair_index, index)
            latents = torch.where(paired[:, None, None, None, None], self.pairs[pair_index].float(), latents)
        video = torch.stack([self.videos[i]["video"] for i in index.tolist()])  # (B, F, 1, H, W)
        return {"latents": latents, "video": video}

    def loss(self, model: VideoVAE, batch: dict, generator: torch.Generator) -> torch.Tensor:
        latents, video = batch["latents"], batch["video"]  # (B, F, c, h, w), (B, F, C, H, W)
        if self.latent_noise:
            scale = self.latent_noise * torch.rand(latents.shape[0], 1, 1, 1, 1, generator=generator)  # s per clip
            eps = torch.randn(latents.shape, generator=generator)  # (B, F, c, h, w), new for every frame
            latents = latents + (scale * eps).to(latents.device)
        recon = model.decode_video(latents)  # (B, F, C, H, W)
        if self.clamped_loss:
            recon = recon.clamp(-1, 1)
        temporal = F.mse_loss(frame_differences(recon), frame_differences(video))
        return F.mse_loss(recon, video) + self.temporal_weight * temporal

    @torch.no_grad()
    def preview(self, model: VideoVAE, path: Path, generator: torch.Generator) -> None:
        """Rows: a held-out clip, its VideoVAE decoding, and |consecutive-frame differences| of that decoding."""
        device = next(model.parameters()).device
        video = torch.stack([item["video"] for item in self.held_out]).to(device)  # (2, F, 1, H, W)
        recon = model.decode_video(model.encode_video(video)).clamp(-1, 1)
        diffs = frame_differences(recon).abs() * 2 - 1  # (2, F-1, 1, H, W), shown in [-1, 1]
        diffs = torch.cat([diffs, torch.full_like(diffs[:, :1], -1)], 1)  # pad to F frames
        rows = torch.stack([video, recon, diffs], 1).flatten(0, 2)  # (2*3*F, 1, H, W)
        save_image(rows * 0.5 + 0.5, path, nrow=video.shape[1])

    def save(self, model: VideoVAE, directory: Path, command: str, **info) -> None:
        model.save_pretrained(directory, command=command, **info)

    evaluate = staticmethod(evaluate_videovae)  # the numbers the README reports
