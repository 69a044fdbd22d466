"""Stage continuation: the text-to-video model taught to continue a clip, for streaming (docs/paper.md §10).

The shipped t2v model is trained further with `continuation_loss` (streaming.py): a random-length clean prefix
of each clip is given at t = 0 and the model denoises the rest, so that frames can be generated after frames
that are already finished. The training clips are windows of F frames cut at a random start from long clips
(`clip_frames`, 32 by default) that bounce off the walls, captioned with their first leg as the data set does:
what a stream past F frames asks of the model (its sliding window re-indexes each window to rows 0 .. F-1).
A window cut after frame 0 always gets at least one given frame: a stream never starts a window unseen.
`temporal_attention="bidirectional"` trains the bidirectional ablation the same way, from the same weights,
to measure what directed attention buys when streaming.
"""

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torchvision.utils import save_image

from minimagic.clips import captions, encode_clips
from minimagic.paths import T2V_CHECKPOINT
from minimagic.stages.t2v import TextToVideoOptions, TextToVideoStage
from minimagic.streaming import continuation_loss
from minimagic.train import option
from minimagic.video_unet import VideoUNet

PREVIEW_FRAMES = 16  # twice the trained window: the preview streams past it
PREVIEW_STEPS = 10  # DDIM steps of the preview, kept short: it runs at the end of every short run


@dataclass
class ContinuationOptions:
    init: str = option(str(T2V_CHECKPOINT), "the t2v pipeline to teach continuation")
    num_clips: int = option(6000, "Moving-digit training clips")
    temporal_attention: str = option("directed", "directed, or bidirectional (the ablation; same weights)")
    clip_frames: int = option(32, "frames of the long, bouncing clips the training windows are cut from")


class ContinuationStage(TextToVideoStage):
    """Continuation training from a t2v pipeline; the saved folder is a t2v pipeline that can stream."""

    name, Options = "continuation", ContinuationOptions
    defaults = {**TextToVideoStage.defaults, "steps": 400, "warmup": 50, "preview_every": 400}

    def __init__(self, options: ContinuationOptions | None = None, **overrides):
        options = replace(options or ContinuationOptions(), **overrides)
        temporal_attention = options.temporal_attention
        if temporal_attention not in ("directed", "bidirectional"):
            raise ValueError(f"temporal_attention must be 'directed' or 'bidirectional', got {temporal_attention!r}")
        super().__init__(TextToVideoOptions(init=options.init, num_clips=options.num_clips, new_lr_scale=1.0))
        if not isinstance(self.model, VideoUNet):
            raise ValueError(f"{options.init} is not a text-to-video pipeline")
        if self.model.config.temporal_attention != temporal_attention:
            config = {**self.model.config_dict(), "temporal_attention": temporal_attention}
            model = VideoUNet.from_config_dict(config)
            model.load_state_dict(self.model.state_dict())  # same parameters, another mask
            self.model = model.train()
        window = self.model.num_frames
        if options.clip_frames < window:
            raise ValueError(f"clip_frames must be >= the model's {window} frames, got {options.clip_frames}")
        if options.clip_frames > window:
            long = encode_clips(self.vae, "train", options.num_clips, num_frames=options.clip_frames)
            self.clips = {**self.clips, "latents": long["latents"],  # (N, clip_frames, c, h, w)
                          "captions": captions(long["digits"], long["directions"])}

    def batch(self, batch_size: int, generator: torch.Generator) -> dict:
        """A window of F frames at a random start of each drawn clip; `offset` > 0: cut after frame 0."""
        batch = super().batch(batch_size, generator)  # x0 (B, clip_frames, c, h, w)
        window, clip_frames = self.model.num_frames, batch["x0"].shape[1]
        offset = torch.randint(clip_frames - window + 1, (batch_size,), generator=generator)  # (B,)
        frames = offset[:, None] + torch.arange(window)  # (B, F) frame indices
        x0 = batch["x0"][torch.arange(batch_size)[:, None], frames]  # (B, F, c, h, w)
        return {**batch, "x0": x0, "offset": offset}

    def loss(self, model, batch: dict, generator: torch.Generator) -> torch.Tensor:
        diffusion = self.diffusion.to(batch["x0"].device)
        return continuation_loss(model, diffusion, batch["x0"], batch["context"], batch["fps"], generator,
                                 min_prefix=(batch["offset"] > 0).long())

    def preview(self, model, path: Path, generator: torch.Generator) -> None:
        pipe = self.pipeline(model)
        videos = pipe(self.clips["video_prompts"][:2], num_frames=PREVIEW_FRAMES, num_inference_steps=PREVIEW_STEPS,
                      fps=self.preview_fps, generator=torch.Generator().manual_seed(0))  # (P, F, C, H, W)
        save_image(videos.flatten(0, 1) * 0.5 + 0.5, path, nrow=videos.shape[1])

    def save(self, model, directory: Path, command: str, **info) -> None:
        self.pipeline(model).save_pretrained(directory, command=command, stage="t2v",
                                             objective="continuation", **info)
