"""Streaming with directed temporal attention (docs/paper.md §10): a clip of any length, frame after frame.

MagicVideo's directed attention (docs/paper.md §3.2) lets frame i see only frames <= i, so a finished frame
never changes, nor do its keys and values. `stream_latents` makes a clip in blocks (default: one frame each),
each denoised by DDIM given the finished frames before it as clean frames at t = 0,
    z_t^{new} -> eps_theta([z_0^{0..P-1}, z_t^{new}], t = [0, .., 0, t, .., t], tau(y), v);
with `use_cache` (directed models) those P frames enter only through a TemporalKVCache's keys and values.

Choices (ours, docs/paper.md §10):
- cached frames are the finished latents re-run once at t = 0 (one extra pass per block), as the given frames
  of `continuation_loss` in training. With `context_t` = c > 0 (trained with `context_noise`) they enter noised
  once to z_c = sqrt(abar_c) z_0 + sqrt(1 - abar_c) eps, at t = c, to lean less on their small errors;
- the model has rows for F frames (adaptor rows S_i, B_i and frame positions); past F the window slides: when
  a block of k new frames no longer fits, the window restarts at the last min(K, F - k) finished frames
  (K = `keep_frames`, default F - 1), re-indexed to rows 0 .. F-1. With `sink_frames` = s > 0 (a model trained
  with sinks) the clip's first s frames stay in rows 0 .. s-1 and the last K - s follow them: a frame sink,
  as in LongLive, that ties late frames to the first ones. A cached frame's new row changes its keys and
  values: the cache is rebuilt when the window slides, one pass over K frames per new frame (K = F/2: one pass
  every F/2 frames, cheaper, and worse clips, docs/paper.md §10);
- a bidirectional model has no cache (its past frames see the new ones): it samples its first window jointly,
  then slides the window the same way, recomputing all of it at every step.
"""

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image
from tqdm.auto import tqdm

from minimagic.diffusion import GaussianDiffusion
from minimagic.guidance import classifier_free_guidance
from minimagic.temporal_attention import TemporalKVCache
from minimagic.video_unet import VideoUNet


def continuation_loss(model: VideoUNet, diffusion: GaussianDiffusion, x0: torch.Tensor, context: torch.Tensor,
                      fps: torch.Tensor, generator: torch.Generator | None = None,
                      min_prefix: torch.Tensor | None = None, context_noise: int = 0) -> torch.Tensor:
    """|| eps - eps_theta([z_0^{<k}, z_t^{>=k}], [0, .., 0, t, .., t]) ||^2 on the noisy frames only.

    A clean prefix of random length: per clip, k ~ U{m..F-1} first frames (m = min_prefix (B,), default 0) are
    given clean at t = 0, the others noised at one t ~ U{0..T-1}. k = 0 is the text-to-video loss; k >= 1 teaches
    the model to continue a clip (k = 1: image-to-video), as `stream_latents` asks of it. context_noise c > 0:
    the prefix is given noised to a level t_c ~ U{0..c} per clip (at t = t_c) instead."""
    if x0.ndim != 5:
        raise ValueError(f"x0 must be latents (B, F, c, h, w), got {tuple(x0.shape)}")
    B, num_frames = x0.shape[:2]
    draw = generator.device if generator is not None else x0.device
    low = torch.zeros(B, device=draw) if min_prefix is None else min_prefix.to(draw).float().clamp(0, num_frames - 1)
    uniform = torch.rand(B, generator=generator, device=draw)
    k = (low + uniform * (num_frames - low)).long().clamp(max=num_frames - 1).to(x0.device)  # (B,) prefix lengths
    t = torch.randint(0, diffusion.num_timesteps, (B,), generator=generator, device=draw).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=draw).to(x0.device, x0.dtype)  # eps
    t_given = torch.randint(0, context_noise + 1, (B,), generator=generator, device=draw).to(x0.device) \
        if context_noise > 0 else torch.zeros_like(t)  # (B,) the prefix's noise level
    given = torch.arange(num_frames, device=x0.device) < k[:, None]  # (B, F): True = prefix frame
    t_frames = torch.where(given, t_given[:, None], t[:, None])  # (B, F) per-frame timesteps
    abar = diffusion.alphas_cumprod.to(x0.device)[t_frames].to(x0.dtype)[..., None, None, None]  # (B, F, 1, 1, 1)
    noisy = abar.sqrt() * x0 + (1 - abar).sqrt() * noise  # z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps
    x_t = torch.where((given & (t_frames == 0))[..., None, None, None], x0, noisy)  # (B, F, c, h, w)
    target = noise if diffusion.config.prediction == "epsilon" else abar.sqrt() * noise - (1 - abar).sqrt() * x0
    output = model(x_t, t_frames, context=context, fps=fps)
    per_frame = F.mse_loss(output, target, reduction="none").mean(dim=(2, 3, 4))  # (B, F)
    return (per_frame * ~given).sum() / (~given).sum()  # mean over the noisy frames; static shapes for torch.compile


def stream_latents(model: VideoUNet, diffusion: GaussianDiffusion, context: torch.Tensor, uncond: torch.Tensor,
                   num_frames: int, fps: float, latent_size: tuple[int, int, int], num_steps: int = 25,
                   guidance_scale: float = 4.0, eta: float = 0.0, generator: torch.Generator | None = None,
                   first_frame: torch.Tensor | None = None, block_size: int = 1, use_cache: bool = True,
                   keep_frames: int | None = None, context_t: int = 0, sink_frames: int = 0) -> Iterator[torch.Tensor]:
    """Yield the latents of a clip of `num_frames` frames block by block, (B, k, c, h, w) each, as they finish.

    context (B, L, D) = tau(y), uncond (1, L, D) = tau(""); first_frame (B, c, h, w): a given frame 0
    (image-to-video), yielded first. Directed models make blocks of `block_size` frames (the cache needs
    `use_cache` and directed attention); a bidirectional model makes its first window of F frames jointly.
    keep_frames, context_t and sink_frames: see above. Bad arguments raise here, before the first block."""
    window, directed = model.num_frames, model.config.temporal_attention != "bidirectional"
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    keep_frames = window - 1 if keep_frames is None else keep_frames
    for name, value in (("block_size", block_size), ("keep_frames", keep_frames)):
        if not 1 <= value < max(window, 2):
            raise ValueError(f"{name} must be in [1, {max(window - 1, 1)}] ({window} frames in the model), got {value}")
    if not 0 <= sink_frames < min(keep_frames, window - block_size):
        raise ValueError(f"sink_frames must be below keep_frames and {window} - block_size, got {sink_frames}")
    if not 0 <= context_t < diffusion.num_timesteps:
        raise ValueError(f"context_t must be in [0, {diffusion.num_timesteps - 1}], got {context_t}")
    if use_cache and not directed:
        raise ValueError("a bidirectional model cannot use the KV cache: pass use_cache=False")
    if first_frame is not None and first_frame.shape != (context.shape[0], *latent_size):
        raise ValueError(f"first_frame latents must be ({context.shape[0]}, {', '.join(map(str, latent_size))}), "
                         f"got {tuple(first_frame.shape)}")
    B, device = context.shape[0], context.device
    fps_batch = torch.full((B,), float(fps), device=device)
    t_given = torch.full((B,), context_t, dtype=torch.long, device=device)  # the finished frames' noise level

    def guided(x: torch.Tensor, t: torch.Tensor, **options) -> torch.Tensor:
        return classifier_free_guidance(model, x, t, context, uncond, guidance_scale, fps=fps_batch, **options)

    def denoise(x: torch.Tensor, t: torch.Tensor, prefix: torch.Tensor | None, cache: TemporalKVCache | None):
        """eps of the new block x (B, k, c, h, w) at t (B,), after the finished prefix (B, P, c, h, w)."""
        if cache is not None or prefix is None:
            return guided(x, t, cache=cache)
        P = prefix.shape[1]
        t_frames = torch.cat([t_given[:, None].expand(-1, P), t[:, None].expand(-1, x.shape[1])], dim=1)  # (B, P + k)
        return guided(torch.cat([prefix, x], dim=1), t_frames)[:, P:]  # (B, k, c, h, w)

    def seen(frames: torch.Tensor) -> list[torch.Tensor]:
        """Finished frames (B, k, c, h, w) as the model is given them, at t = context_t: (B, 1, c, h, w) each."""
        if context_t > 0:
            noise = torch.randn(frames.shape, generator=generator, device=generator.device if generator else device)
            frames = diffusion.q_sample(frames, t_given, noise.to(device))
        return list(frames.split(1, dim=1))

    @torch.no_grad()
    def blocks() -> Iterator[torch.Tensor]:
        history = []  # the finished frames as the model sees them, (B, 1, c, h, w) each
        if first_frame is not None:
            history += seen(first_frame[:, None].to(device))
            yield first_frame[:, None].to(device)
        cache, cache_start, start = None, -1, 0
        while len(history) < num_frames:
            size = min(block_size if directed else max(block_size, window - len(history)), num_frames - len(history))
            sink = min(sink_frames, start)  # 0 until the window first slides
            if sink + len(history) - start + size > window:  # the block does not fit: slide, keep the last frames
                start, sink = len(history) - min(keep_frames, window - size) + sink_frames, sink_frames
            kept = history[:sink] + history[start:]  # the window's finished frames, in rows 0 .. P-1
            prefix = torch.cat(kept, dim=1) if kept else None  # (B, P, c, h, w)
            if use_cache:
                if cache_start != start:  # the window slid: its frames moved to other rows, rebuild the cache
                    cache, cache_start = TemporalKVCache(), start
                missing = kept[cache.num_frames:]
                if missing:  # finished frames not cached yet: one pass at t = context_t writes their K, V
                    guided(torch.cat(missing, dim=1), t_given, cache=cache, extend_cache=True)
            block = diffusion.sample(partial(denoise, prefix=prefix, cache=cache), (B, size, *latent_size),
                                     num_steps, eta=eta, generator=generator, device=device)
            history += seen(block)
            yield block

    return blocks()


def first_frame_latents(pipe, first_frame: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A given frame 0 for image-to-video, (C, H, W) or (1 | B, C, H, W) in [-1, 1] -> VAE latents (B, c, h, w)."""
    channels, size = pipe.vae.config.in_channels, pipe.image_size
    image = first_frame[None] if first_frame.ndim == 3 else first_frame
    if image.ndim != 4 or image.shape[0] not in (1, batch_size) or image.shape[1:] != (channels, size, size):
        raise ValueError(f"first_frame must be ({channels}, {size}, {size}) or (1 | {batch_size}, {channels}, {size}, "
                         f"{size}) in [-1, 1], got {tuple(first_frame.shape)}")
    image = image.expand(batch_size, -1, -1, -1).to(pipe.device, torch.float32)  # (B, C, H, W)
    with torch.no_grad():
        return pipe.vae.encode_video(image[:, None])[:, 0]  # (B, c, h, w)


def stream_pipeline(pipe, prompts: list[str], num_frames: int, first_frame: torch.Tensor | None = None,
                    num_inference_steps: int = 25, guidance_scale: float = 4.0, eta: float = 0.0, fps: float = 8.0,
                    generator: torch.Generator | None = None, block_size: int = 1, use_cache: bool | None = None,
                    **options) -> Iterator[torch.Tensor]:
    """`stream_latents` for a TextToVideoPipeline and its prompts: latent blocks (B, k, c, h, w) as they finish.

    Directed models use the KV cache unless use_cache=False; a bidirectional one recomputes its window (the
    fallback past its trained frame count). options: `stream_latents`'s keep_frames, context_t, sink_frames
    (default: the pipeline's `stream_options`)."""
    if not pipe.is_video:
        raise ValueError("streaming needs a text-to-video model, this pipeline holds an image model")
    device, (context, _) = pipe.device, pipe.text_encoder.encode(prompts)  # context (B, L, D)
    uncond, _ = pipe.text_encoder.uncond(1)  # (1, L, D) = tau("")
    given = first_frame_latents(pipe, first_frame, len(prompts)) if first_frame is not None else None
    pipe.unet.eval()
    use_cache = pipe.unet.config.temporal_attention != "bidirectional" if use_cache is None else use_cache
    return stream_latents(pipe.unet, pipe.diffusion.to(device), context.to(device), uncond.to(device), num_frames,
                          fps, pipe.latent_size, num_inference_steps, guidance_scale, eta, generator, given,
                          block_size, use_cache, **{**pipe.stream_options, **options})


def stream_frames(pipe, prompts: list[str], num_frames: int, first_frame: torch.Tensor | None = None,
                  progress: bool = False, **options) -> Iterator[torch.Tensor]:
    """Decoded frames (B, C, H, W) in [-1, 1], one at a time as soon as each is finished (VAE, frame by frame)."""
    with tqdm(total=num_frames, desc="streaming frames", disable=not progress) as bar:
        for block in stream_pipeline(pipe, prompts, num_frames, first_frame, **options):
            for frame in pipe.vae.decode_video(block).clamp(-1, 1).unbind(1):  # (B, C, H, W) each
                bar.update(1)
                yield frame


def stream_to_folder(pipe, prompt: str, num_frames: int, folder: str | Path, first_frame: torch.Tensor | None = None,
                     **options) -> torch.Tensor:
    """Stream one clip, writing folder/frame_NNNN.png as each frame finishes; return it (F, C, H, W)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for i, frame in enumerate(stream_frames(pipe, [prompt], num_frames, first_frame, progress=True, **options)):
        save_image(frame[0] * 0.5 + 0.5, folder / f"frame_{i:04d}.png")
        frames.append(frame[0])
    return torch.stack(frames)  # (F, C, H, W)
