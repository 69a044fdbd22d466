"""Stage continuation: the text-to-video model taught to continue a clip, for streaming (docs/paper.md §10).

The shipped t2v model is trained further with `continuation_loss` (streaming.py): a random-length clean prefix
of each clip is given at t = 0 and the model denoises the rest, so that frames can be generated after frames
that are already finished. Two kinds of training window, as a stream meets them (its sliding window re-indexes
each window to rows 0 .. F-1):
- FIRST_WINDOW_SHARE of them are the t2v model's own F-frame clips (no wall reached, the caption is the motion
  in every frame) with a prefix of 0 .. F-1 frames: the stream's first window, where the caption alone sets the
  direction;
- the others are windows cut at a random start after frame 0 of long clips (`clip_frames`, 32 by default) that
  bounce off the walls, captioned with their first leg as the data set does, and always get at least F/2 given
  frames (a stream in blocks of <= F/2 frames, one by default, has >= F/2 finished frames in every later window):
  the prefix shows the motion, which after a bounce is no longer the caption's. Given one frame there, the model
  would learn that a caption does not fix the direction, and the first window would lose it. With
  `sink_frames` = s the long clip's first s frames take rows 0 .. s-1 of these windows, as a stream with frame
  sinks gives them (streaming.py): the clip's start, then the frames before the new ones.
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
FIRST_WINDOW_SHARE = 0.5  # training windows that are a clip's first F frames, as a stream's first window


@dataclass
class ContinuationOptions:
    init: str = option(str(T2V_CHECKPOINT), "the t2v pipeline to teach continuation")
    num_clips: int = option(6000, "Moving-digit training clips")
    temporal_attention: str = option("directed", "directed, or bidirectional (the ablation; same weights)")
    clip_frames: int = option(32, "frames of the long, bouncing clips the training windows are cut from")
    context_noise: int = option(0, "given frames noised to a level t_c ~ U{0..this} (0: clean; streaming.py); "
                                "the saved model streams at this / 2")
    sink_frames: int = option(0, "later windows begin with the clip's first frames (frame sinks, streaming.py)")


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
            self.model = self.model.with_temporal_attention(temporal_attention).train()  # same parameters
        window, self.context_noise, self.sink_frames = self.model.num_frames, options.context_noise, options.sink_frames
        if not 0 <= self.context_noise < self.diffusion.num_timesteps:
            raise ValueError(f"context_noise must be in [0, {self.diffusion.num_timesteps - 1}], "
                             f"got {self.context_noise}")
        if not 0 <= self.sink_frames < window // 2:
            raise ValueError(f"sink_frames must be in [0, {window // 2 - 1}], got {self.sink_frames}")
        if options.clip_frames < window:
            raise ValueError(f"clip_frames must be >= the model's {window} frames, got {options.clip_frames}")
        self.long = None  # long clips: latents (N, clip_frames, c, h, w) and their first-leg captions
        if options.clip_frames > window:
            long = encode_clips(self.vae, "train", options.num_clips, num_frames=options.clip_frames)
            self.long = {"latents": long["latents"], "captions": captions(long["digits"], long["directions"])}

    def batch(self, batch_size: int, generator: torch.Generator) -> dict:
        """Per item a t2v clip (FIRST_WINDOW_SHARE of them, `offset` 0) or a later window of a long clip."""
        batch = super().batch(batch_size, generator)  # x0 (B, F, c, h, w): t2v clips
        if self.long is None:
            return {**batch, "offset": torch.zeros(batch_size, dtype=torch.long)}
        window, clip_frames = self.model.num_frames, self.long["latents"].shape[1]
        clip = torch.randint(len(self.long["latents"]), (batch_size,), generator=generator)  # (B,)
        offset = torch.randint(1, clip_frames - window + 1, (batch_size,), generator=generator)  # (B,)
        sinks = torch.arange(window) < self.sink_frames  # (F,): rows that hold the clip's first frames
        frames = torch.where(sinks, torch.arange(window), offset[:, None] + torch.arange(window))  # (B, F) indices
        later = self.long["latents"][clip[:, None], frames].float()  # (B, F, c, h, w)
        context = self.contexts([self.long["captions"][i] for i in clip.tolist()], generator)  # (B, L, D)
        first = torch.rand(batch_size, generator=generator) < FIRST_WINDOW_SHARE  # (B,)
        return {**batch, "x0": torch.where(first[:, None, None, None, None], batch["x0"], later),
                "context": torch.where(first[:, None, None], batch["context"], context),
                "offset": torch.where(first, 0, offset)}

    def loss(self, model, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """`continuation_loss`; a window cut after frame 0 is given at least its first F/2 frames."""
        diffusion = self.diffusion.to(batch["x0"].device)
        min_prefix = (batch["offset"] > 0).long() * (self.model.num_frames // 2)  # (B,)
        return continuation_loss(model, diffusion, batch["x0"], batch["context"], batch["fps"], generator,
                                 min_prefix=min_prefix, context_noise=self.context_noise)

    def preview(self, model, path: Path, generator: torch.Generator) -> None:
        pipe = self.pipeline(model)
        videos = pipe(self.clips["video_prompts"][:2], num_frames=PREVIEW_FRAMES, num_inference_steps=PREVIEW_STEPS,
                      fps=self.preview_fps, generator=torch.Generator().manual_seed(0))  # (P, F, C, H, W)
        save_image(videos.flatten(0, 1) * 0.5 + 0.5, path, nrow=videos.shape[1])

    def save(self, model, directory: Path, command: str, **info) -> None:
        """A t2v pipeline; it streams with its sinks, and at half the largest context noise (stream_* keys)."""
        noise = {"context_noise": self.context_noise, "stream_context_t": self.context_noise // 2} \
            if self.context_noise else {}
        noise |= {"stream_sink_frames": self.sink_frames} if self.sink_frames else {}
        self.pipeline(model).save_pretrained(directory, command=command, stage="t2v",
                                             objective="continuation", **noise, **info)
