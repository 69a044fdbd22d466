"""Measure a checkpoint the way the README reports it: `python -m minimagic evaluate --checkpoint DIR`.

vae: reconstruction PSNR on held-out test digits (never seen in training);
t2i: for "the digit <k>", the fraction of generated images the digit classifier reads as <k>, per guidance scale;
t2v: for random "the digit <k> moves <direction>" prompts and seeds that training never used, the fraction
     of frames showing digit <k>, of clips moving in the captioned direction, and of clips whose digit keeps
     its identity in every frame; FVD-MD against as many held-out real clips (the Moving-MNIST video network
     of `video_classifier.py`) and that network's digit and direction accuracy;
videovae: flicker and PSNR of held-out clips decoded frame by frame vs by the VideoVAE (docs/paper.md §5), with two
          ablations (temporal layers zeroed; every frame decoded alone);
interp: in-between frames of held-out clips generated from their first and last frame, vs linear blending.
`minimagic.stages.evaluate` picks the function by the checkpoint's stage and writes JSON and a Markdown table.
"""

import copy
import time
from pathlib import Path

import torch
from torch import nn

from minimagic import checkpoint
from minimagic.data import DIRECTION_NAMES, MovingDigits, caption_for
from minimagic.fvd import fvd_md
from minimagic.interpolation import FrameInterpolator
from minimagic.metrics import DigitClassifier, background_flicker, centroid_path, flicker, psnr, video_scores
from minimagic.paths import T2V_CHECKPOINT, VAE_CHECKPOINT
from minimagic.pipeline import TextToVideoPipeline
from minimagic.pipeline_folder import load_pipeline
from minimagic.strokes import spurious_strokes
from minimagic.vae import VAE
from minimagic.video_classifier import VideoClassifier, prompt_accuracy
from minimagic.videovae import VideoVAE

GUIDANCE_SCALES = (1.0, 2.0, 4.0, 7.5)
FAR = 3  # px from ink: beyond it, background flicker is dithering, not the moving digit's rim


@torch.no_grad()
def evaluate_vae(directory: Path, num_images: int = 1000, **_) -> dict:
    vae = VAE.from_pretrained(directory)
    data = MovingDigits("test", image_mode=True, length=num_images, seed=1)
    x = torch.stack([data[i]["image"] for i in range(num_images)])  # (N, 1, H, W)
    recon = torch.cat([vae.decode(vae.encode(chunk).mode()).clamp(-1, 1) for chunk in x.split(100)])
    return {"held_out_images": num_images, "psnr_db": round(psnr(recon, x)[1], 2)}


@torch.no_grad()
def evaluate_t2i(directory: Path, per_digit: int = 50, seed: int = 1, steps: int = 25,
                 guidance_scales: tuple[float, ...] = GUIDANCE_SCALES, **_) -> dict:
    pipe, classifier = TextToVideoPipeline.from_pretrained(directory), DigitClassifier.from_pretrained()
    digits = torch.arange(10).repeat_interleave(per_digit)  # (10 * per_digit,)
    prompts = [caption_for([d], None) for d in digits.tolist()]
    results = {"images_per_digit": per_digit, "ddim_steps": steps, "accuracy": {}}
    for scale in guidance_scales:
        generator = torch.Generator().manual_seed(seed)
        images = torch.cat([pipe(prompts[i : i + 100], num_inference_steps=steps, guidance_scale=scale,
                                 generator=generator)[:, 0] for i in range(0, len(prompts), 100)])
        predicted = classifier(images).argmax(-1)  # (N,)
        results["accuracy"][str(scale)] = round((predicted == digits).float().mean().item(), 4)
    return results


@torch.no_grad()
def score_t2v(pipe: TextToVideoPipeline, num_videos: int = 100, seed: int = 1, steps: int = 25,
              guidance_scale: float = 4.0, decoder: str = "auto", classifier: DigitClassifier | None = None,
              network: VideoClassifier | None = None, sampler: str = "ddim", shared_noise: float = 0.0,
              eta: float = 0.0) -> dict:
    """Generate `num_videos` clips for random prompts; score them with `video_scores`, FVD-MD against as many
    held-out real clips and the FVD-MD network's prompt accuracy."""
    classifier = classifier or DigitClassifier.from_pretrained()
    network = network or VideoClassifier.from_pretrained()
    generator = torch.Generator().manual_seed(seed)
    digits = torch.randint(10, (num_videos,), generator=generator)
    directions = torch.randint(len(DIRECTION_NAMES), (num_videos,), generator=generator)
    prompts = [caption_for([d], [k]) for d, k in zip(digits.tolist(), directions.tolist(), strict=True)]
    start = time.time()
    videos = torch.cat([pipe(prompts[i : i + 25], num_inference_steps=steps, guidance_scale=guidance_scale,
                             generator=generator, decoder=decoder, sampler=sampler, shared_noise=shared_noise,
                             eta=eta)
                        for i in range(0, num_videos, 25)])  # (N, F, 1, H, W)
    seconds = (time.time() - start) / num_videos
    scores = {k: round(float(v), 4) for k, v in video_scores(videos, prompts, classifier).items()
              if not torch.is_tensor(v) or v.ndim == 0}
    real_clips = MovingDigits("test", num_frames=videos.shape[1], length=num_videos, seed=seed)
    real = torch.stack([real_clips[i]["video"] for i in range(num_videos)])  # (N, F, 1, H, W)
    accuracy = prompt_accuracy(videos, prompts, network)
    return {"videos": num_videos, "sampler": sampler, "ddim_steps": steps, "guidance_scale": guidance_scale,
            "shared_noise": shared_noise, "eta": eta,
            "seconds_per_clip": round(seconds, 2), **scores, "fvd_md": round(fvd_md(real, videos, network), 3),
            **{f"fvd_md_{k}": round(v, 4) for k, v in accuracy.items()},
            "background_flicker": round(background_flicker(videos), 5)}


def evaluate_t2v(directory: Path, **options) -> dict:
    return score_t2v(TextToVideoPipeline.from_pretrained(directory), **{
        k: v for k, v in options.items() if k in ("num_videos", "seed", "steps", "guidance_scale", "sampler",
                                                            "shared_noise", "eta")})


@torch.no_grad()
def evaluate_videovae(directory: Path, num_videos: int = 100, seed: int = 1, steps: int = 50,
                      guidance_scale: float = 7.5, eta: float = 1.0, t2v: Path = T2V_CHECKPOINT, **_) -> dict:
    """Image VAE (frame by frame, its original decoder) vs VideoVAE: per-frame PSNR, flicker and background
    flicker on held-out clips (the clips' own background flicker, from their moving edges, is the floor);
    background flicker and spurious strokes (strokes.py) of clips generated by the shipped t2v model (by
    default with `generate`'s sampling settings).
    Two ablations say where the VideoVAE's gain comes from: `videovae_no_temporal`, its temporal layers (docs/paper.md
    §5) zeroed, and `videovae_single_frames`, every frame decoded as a clip of its own, so that the temporal
    layers run but see no other frame."""
    video_vae, image_vae = VideoVAE.from_pretrained(directory), VAE.from_pretrained(VAE_CHECKPOINT)
    encoder = video_vae.vae.encoder.state_dict()
    if any(not torch.equal(v, encoder[k]) for k, v in image_vae.encoder.state_dict().items()):
        raise ValueError(f"{directory} was not made from the shipped VAE: its encoder differs")
    data = MovingDigits("test", length=num_videos, seed=seed)
    video = torch.stack([data[i]["video"] for i in range(num_videos)])  # (N, F, 1, H, W)
    latents = image_vae.encode_video(video)
    ablation = copy.deepcopy(video_vae)  # the fine-tuned decoder with its temporal branches switched off
    for layer in ablation.temporal.values():
        nn.init.zeros_(layer.to_out.weight)
        nn.init.zeros_(layer.to_out.bias)

    decoders = {"vae": image_vae.decode_video, "videovae": video_vae.decode_video,
                "videovae_no_temporal": ablation.decode_video, "videovae_single_frames": video_vae.decode_frames_alone}
    results = {"held_out_clips": num_videos, "held_out_background_flicker": round(background_flicker(video), 5)}
    for name, decoder in decoders.items():
        recon = torch.cat([decoder(chunk).clamp(-1, 1) for chunk in latents.split(20)])
        results[f"{name}_psnr_db"] = round(psnr(recon.flatten(0, 1), video.flatten(0, 1))[1], 3)
        results[f"{name}_flicker"] = round(flicker(recon, video), 5)
        results[f"{name}_background_flicker"] = round(background_flicker(recon), 5)  # of real clips, decoded
        results[f"{name}_far_background_flicker"] = round(background_flicker(recon, margin=FAR), 5)
    if (Path(t2v) / checkpoint.CONFIG).is_file():
        pipe, generator = TextToVideoPipeline.from_pretrained(t2v), torch.Generator().manual_seed(seed)
        prompts = [caption_for([i % 10], [i % len(DIRECTION_NAMES)]) for i in range(num_videos // 2)]
        generated = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance_scale, eta=eta,
                         generator=generator, return_latents=True)
        results.update(ddim_steps=steps, guidance_scale=guidance_scale, eta=eta)
        for name, decoder in decoders.items():
            decoded = decoder(generated).clamp(-1, 1)  # (N/2, F, 1, H, W)
            results[f"generated_{name}_background_flicker"] = round(background_flicker(decoded), 5)
            results[f"generated_{name}_far_background_flicker"] = round(background_flicker(decoded, margin=FAR), 5)
            results[f"generated_{name}_spurious_strokes"] = round(spurious_strokes(decoded).mean().item(), 5)
    return results


@torch.no_grad()
def evaluate_interp(directory: Path, num_videos: int = 100, seed: int = 1, steps: int = 25, num_between: int = 3,
                    gaps: tuple[float, ...] = (3.0, 12.0), **_) -> dict:
    """Per keyframe gap (pixels the digit moves from the first to the last frame): the interpolator vs linear
    blending x_j = (1 - a) x_0 + a x_{k+1}, a = j / (k + 1), on the k in-between frames of held-out clips:
    PSNR, the digit classifier's accuracy on the middle frame, and the mean distance (px) of each frame's
    centroid from the true one."""
    parts = load_pipeline(directory, ("interp",))
    model, vae, text = FrameInterpolator.from_pretrained(directory), parts.vae, parts.text_encoder
    classifier = DigitClassifier.from_pretrained()
    k, results = num_between, {"held_out_clips": num_videos, "in_between_frames": num_between, "ddim_steps": steps}
    a = (torch.arange(1, k + 1) / (k + 1))[None, :, None, None, None]  # (1, k, 1, 1, 1)
    for gap in gaps:
        data = MovingDigits("test", num_frames=k + 2, speed=gap / (k + 1), length=num_videos, seed=seed)
        items = [data[i] for i in range(num_videos)]
        video = torch.stack([item["video"] for item in items])  # (N, k + 2, 1, H, W)
        digits = torch.tensor([item["digit"] for item in items])  # (N,)
        context, _ = text.encode([item["caption"] for item in items])  # (N, L, D)
        keyframes, generator = vae.encode_video(video[:, [0, -1]]), torch.Generator().manual_seed(seed)
        latents = torch.cat([model.interpolate(pair, k, ctx, steps, generator)
                             for pair, ctx in zip(keyframes.split(50), context.split(50), strict=True)])
        truth = video[:, 1:-1]  # (N, k, 1, H, W)
        candidates = {"interpolated": vae.decode_video(latents[:, 1:-1]).clamp(-1, 1),
                      "blend": (1 - a) * video[:, :1] + a * video[:, -1:]}
        row = {}
        for name, frames in candidates.items():
            row[f"{name}_psnr_db"] = round(psnr(frames.flatten(0, 1), truth.flatten(0, 1))[1], 2)
            middle = classifier(frames[:, (k + 2) // 2 - 1]).argmax(-1)  # the middle frame of the clip
            row[f"{name}_middle_digit_accuracy"] = round((middle == digits).float().mean().item(), 4)
            error = (centroid_path(frames) - centroid_path(truth)).norm(dim=-1)  # (N, k) pixels
            row[f"{name}_centroid_error_px"] = round(error.mean().item(), 3)
        results[f"gap {gap:g} px"] = row
    return results


def markdown(name: str, results: dict) -> str:
    rows = [(k, v) for k, v in results.items() if not isinstance(v, dict)]
    rows += [(f"{k} @ {sub}", v) for k, d in results.items() if isinstance(d, dict) for sub, v in d.items()]
    return "\n".join([f"| {name} | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]) + "\n"
