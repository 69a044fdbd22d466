"""MagicVideo's efficiency claim (docs/paper.md §8.3), measured on minimagic: FLOPs, speed, memory, training.

The paper says its latent-space U-Net needs "around 64x fewer computations than VDM in terms of FLOPs". This
script measures, for minimagic's VideoUNet:

1. flops     one denoiser forward in latent space vs the same network run on pixels (a VDM-style pixel-space
             3D U-Net of the same width: the same VideoUNet with 3 (or 1) in/out channels), at the paper's
             setting (16 frames, 256x256x3 pixels vs 32x32x4 latents, `base` width) and at the toy one
             (8 frames, 64x64x1 vs 16x16x4, `toy` width). Counted by FlopCounterMode on fake tensors, so the
             ~0.7 PFLOP pixel-space pass costs neither compute nor memory.
2. speed     wall time of forward, forward+backward and sampling (DDIM with classifier-free guidance + VAE
             decode), and peak memory, of minimagic vs diffusers' UNet3DConditionModel configured with the same
             channels, attention levels, heads, cross-attention width and frames. The models take turns in one
             process, so load from other processes hits them alike; ratios are minimagic / diffusers.
3. training  clips/s of the toy t2v training step (loss, backward, clipping, AdamW, EMA) and the torch.profiler
             top ops of one step.

    python bench/efficiency.py --out docs/efficiency.json --md docs/efficiency.md   # CPU, 1 thread: ~2 min
    python bench/efficiency.py --quick                                              # tiny configs, seconds
    python bench/efficiency.py --device cuda                                        # bf16 autocast on a GPU

All weights are random: neither FLOPs nor time depend on them. Needs diffusers (the `dev` extra) for the peer.
"""

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import (
    FlopCounterMode,
    flop_registry,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from minimagic.diffusion import GaussianDiffusion
from minimagic.guidance import classifier_free_guidance
from minimagic.train import ema_update, pick_device
from minimagic.unet import UNetConfig
from minimagic.vae import VAE, VAEConfig
from minimagic.video_unet import VideoUNet, VideoUNetConfig

aten = torch.ops.aten
GUIDANCE_SCALE = 4.0  # the pipeline's default: eps(z_t, y) and eps(z_t, "") in one batch of 2 per clip
FPS = 8.0  # frame rate v of the Moving-MNIST clips


# ----------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Setting:
    """One benchmark point: a U-Net width preset, F frames, a frame in pixels (C, H, W) and latents (c, h, w)."""

    name: str
    preset: str  # UNetConfig / VideoUNetConfig preset: the width of the network
    num_frames: int
    pixel: tuple[int, int, int]
    latent: tuple[int, int, int]
    vae_preset: str  # the autoencoder that maps pixel -> latent (its factor is H / h)
    context_length: int  # text tokens L: CLIP's 77 in the paper, MiniLM's 16 in minimagic


PAPER = Setting("paper", "base", 16, (3, 256, 256), (4, 32, 32), "sd", 77)
TOY = Setting("toy", "toy", 8, (1, 64, 64), (4, 16, 16), "toy", 16)
TINY = Setting("tiny", "tiny", 4, (1, 16, 16), (4, 8, 8), "tiny", 16)


@dataclass(frozen=True)
class Plan:
    """What one run measures, and how often."""

    flop_settings: tuple[Setting, ...]
    speed: Setting  # the matched configuration of the speed, memory and training sections
    batch: int  # clips per forward in the speed comparison (2: one clip with classifier-free guidance)
    repeats: int  # timed calls per model for forward and forward+backward (the median is reported)
    sampling_steps: int
    sampling_repeats: int
    train_batch: int  # the t2v stage's batch size
    train_steps: int


FULL = Plan((PAPER, TOY), TOY, batch=2, repeats=5, sampling_steps=25, sampling_repeats=3, train_batch=8, train_steps=3)
QUICK = Plan((TINY,), TINY, batch=1, repeats=1, sampling_steps=2, sampling_repeats=1, train_batch=2, train_steps=1)


# ----------------------------------------------------------------------------------------------- models
def video_unet(setting: Setting, space: str = "latent") -> VideoUNet:
    """minimagic's VideoUNet at `setting`'s width, with the latent's or the pixels' channels in and out."""
    channels = (setting.latent if space == "latent" else setting.pixel)[0]
    unet = UNetConfig.preset(setting.preset, in_channels=channels, out_channels=channels)
    return VideoUNet(VideoUNetConfig.preset(setting.preset, unet=unet, num_frames=setting.num_frames))


class DiffusersPeer(nn.Module):
    """diffusers' UNet3DConditionModel (ModelScope's text-to-video U-Net) behind VideoUNet's call signature.

    Same channels, ResBlocks per level, attention levels, heads, cross-attention width and norm groups as
    `config`. It is not the same architecture: every ResNet is followed by a temporal conv stack (four
    Conv3d with kernel (3, 1, 1)), every spatial transformer by a temporal transformer (bidirectional
    self-attention + feed-forward), and conv_in by one more temporal transformer; it has no frame-rate input.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        try:
            from diffusers import UNet3DConditionModel
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError("the peer model needs diffusers: pip install -e '.[dev]'") from error
        levels = config.attention_levels
        self.unet = UNet3DConditionModel(
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            down_block_types=tuple("CrossAttnDownBlock3D" if a else "DownBlock3D" for a in levels),
            up_block_types=tuple("CrossAttnUpBlock3D" if a else "UpBlock3D" for a in reversed(levels)),
            block_out_channels=config.channels,
            layers_per_block=config.num_res_blocks,
            norm_num_groups=config.norm_groups,
            cross_attention_dim=config.context_dim,
            attention_head_dim=config.num_heads,  # sic: in UNet3DConditionModel this is the number of heads
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, fps=None) -> torch.Tensor:
        """x (B, F, c, h, w) -> eps (B, F, c, h, w); `fps` is accepted and ignored."""
        sample = x.transpose(1, 2)  # (B, c, F, h, w), a view: the model permutes it back to frames-first
        return self.unet(sample, t, encoder_hidden_states=context).sample.transpose(1, 2)  # (B, F, c, h, w)


def denoiser_inputs(setting: Setting, frame: tuple[int, ...], batch: int, context_dim: int, device=None) -> dict:
    """x (B, F, C, H, W), t (B,), context (B, L, D) and the frame rate: one denoiser call."""
    return dict(
        x=torch.randn(batch, setting.num_frames, *frame, device=device),
        t=torch.randint(0, 1000, (batch,), device=device),
        context=torch.randn(batch, setting.context_length, context_dim, device=device),
        fps=FPS,
    )


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------- 1. FLOPs
CPU_ATTENTION = aten._scaled_dot_product_flash_attention_for_cpu
CPU_ATTENTION_BACKWARD = aten._scaled_dot_product_flash_attention_for_cpu_backward
# minimagic's attention modules, by the last name in the module path FlopCounterMode reports
ATTENTION_KINDS = {"attn1": "spatial self-attention", "attn2": "cross-attention", "temporal": "temporal attention"}


def _cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """Q K^T and A V: 4 B heads T S d, as for the CUDA kernels (a causal mask is not discounted)."""
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def register_cpu_attention_flops() -> None:
    """Teach FlopCounterMode the fused CPU attention kernel.

    It has formulas for the CUDA kernels, but on CPU (real or fake tensors) F.scaled_dot_product_attention
    dispatches to aten._scaled_dot_product_flash_attention_for_cpu, which it does not know: without this,
    every attention would count 0 FLOPs.
    """
    for op, formula in (
        (CPU_ATTENTION, _cpu_attention_flops),
        (CPU_ATTENTION_BACKWARD, _cpu_attention_backward_flops),
    ):
        if op not in flop_registry:  # a later torch may know it already
            register_flop_formula(op)(formula)


register_cpu_attention_flops()


def is_attention_op(op) -> bool:
    """A fused attention kernel (CPU flash, CUDA flash / efficient / cuDNN, forward or backward)."""
    return "attention" in str(op)


def count_flops(model: Callable, inputs: dict, backward: bool = False) -> dict:
    """FLOPs of model(**inputs) (and of the backward of a scalar loss on its output).

    Split into convolution, matmul (projections, feed-forward, embeddings) and the attention kernels (Q K^T
    and A V), these also by kind for minimagic's modules. FlopCounterMode counts matmuls, convolutions and
    attention, not the elementwise work (norms, activations, softmax): those are memory-bound, not FLOPs-bound.
    """
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(backward):
        out = model(**inputs)
        if backward:
            out.float().square().mean().backward()
    counts = counter.get_flop_counts()
    by_kind = dict.fromkeys(ATTENTION_KINDS.values(), 0)
    for module, ops in counts.items():
        kind = ATTENTION_KINDS.get(module.rsplit(".", 1)[-1])
        if kind is not None:
            by_kind[kind] += sum(flops for op, flops in ops.items() if is_attention_op(op))
    total = counter.get_total_flops()
    convolution = sum(flops for op, flops in counts["Global"].items() if "convolution" in str(op))
    attention = sum(flops for op, flops in counts["Global"].items() if is_attention_op(op))
    return {
        "total": total,
        "convolution": convolution,
        "matmul": total - convolution - attention,
        "attention": attention,
        "attention_by_kind": by_kind,
        "by_op": {str(op).removeprefix("aten."): flops for op, flops in counts["Global"].items()},
    }


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def flop_comparison(setting: Setting) -> dict:
    """One forward (batch 1, no guidance) of the same VideoUNet in latent and in pixel space.

    Counted on fake CPU tensors: FakeTensorMode propagates shapes and dispatches the same kernels as real CPU
    tensors (tests/test_bench.py checks that the counts agree), so even the paper-setting pixel pass needs
    no compute and no memory.
    """
    row = {"setting": setting.name, "preset": setting.preset, "num_frames": setting.num_frames}
    for space in ("latent", "pixel"):
        frame = getattr(setting, space)
        with FakeTensorMode():
            model = video_unet(setting, space)
            inputs = denoiser_inputs(setting, frame, 1, model.unet_config.context_dim)
            row[space] = {"frame": list(frame), "params": num_params(model), **count_flops(model, inputs)}
    with FakeTensorMode():  # what the latent model pays once per clip and the pixel model never does
        vae = VAE(VAEConfig.preset(setting.vae_preset))
        latents = torch.randn(1, setting.num_frames, *setting.latent)  # (B, F, c, h, w)
        row["vae_decode"] = count_flops(vae.decode_video, {"latents": latents})
    latent, pixel = row["latent"], row["pixel"]
    (c, h, w), (C, H, W) = setting.latent, setting.pixel
    by_kind = {k: ratio(pixel[k], latent[k]) for k in ("convolution", "matmul", "attention")}
    for kind in ATTENTION_KINDS.values():
        by_kind[kind] = ratio(pixel["attention_by_kind"][kind], latent["attention_by_kind"][kind])
    self_attention = "spatial self-attention"
    row.update(
        ratio=pixel["total"] / latent["total"],
        positions_ratio=(H * W) / (h * w),  # (256 / 8)^2 = 64 at the paper's setting
        elements_ratio=(C * H * W) / (c * h * w),  # 256*256*3 / (32*32*4) = 48
        ratio_by_kind=by_kind,
        ratio_without_spatial_self_attention=ratio(
            pixel["total"] - pixel["attention_by_kind"][self_attention],
            latent["total"] - latent["attention_by_kind"][self_attention],
        ),
    )
    return row


# ----------------------------------------------------------------------------------------------- 2. speed, memory
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, as train.py does; plain fp32 elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def round_robin(
    tasks: dict[str, Callable[[], object]], repeats: int, device: torch.device, warmup: bool = True
) -> dict[str, float]:
    """Median seconds per call of each task. The tasks take turns, in reversed order every other round, so
    that load from other processes on a shared machine hits all of them alike."""
    names = list(tasks)
    if warmup:
        for name in names:
            tasks[name]()
    seconds = {name: [] for name in names}
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else names[::-1]:
            synchronize(device)
            start = time.perf_counter()
            tasks[name]()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes that `fn` allocates on top of what was allocated before it (weights, inputs, optimizer).

    CUDA: torch.cuda.max_memory_allocated. CPU: the profiler's allocator events (+bytes for each allocation,
    -bytes for each free, on every thread), summed in time order; the peak is the maximum of that running sum.
    Both count tensor memory only (activations, gradients, workspaces), not the Python heap or the process RSS.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == DeviceType.CPU
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def forward_task(model: nn.Module, inputs: dict, device: torch.device) -> Callable[[], None]:
    def forward() -> None:
        model.eval()
        with torch.no_grad(), autocast(device):
            model(**inputs)

    return forward


def forward_backward_task(model: nn.Module, inputs: dict, device: torch.device) -> Callable[[], None]:
    def forward_backward() -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        with autocast(device):
            loss = model(**inputs).float().square().mean()
        loss.backward()

    return forward_backward


def sampling_task(
    model: nn.Module, vae: VAE, setting: Setting, context_dim: int, steps: int, device: torch.device
) -> Callable[[], None]:
    """One clip as TextToVideoPipeline makes it, minus the text encoder (whose outputs the pipeline caches):
    `steps` DDIM steps with classifier-free guidance (a batch of 2), then the VAE decodes frame by frame."""
    diffusion = GaussianDiffusion().to(device)
    context = torch.randn(1, setting.context_length, context_dim, device=device)  # tau(y)
    uncond = torch.randn(1, setting.context_length, context_dim, device=device)  # tau("")
    fps = torch.full((1,), FPS, device=device)

    def denoise(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return classifier_free_guidance(model, z_t, t, context, uncond, GUIDANCE_SCALE, fps=fps)

    def sample() -> None:
        model.eval()
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad(), autocast(device):
            shape = (1, setting.num_frames, *setting.latent)  # (B, F, c, h, w)
            latents = diffusion.sample(denoise, shape, steps, generator=generator, device=device)
            vae.decode_video(latents)  # (B, F, C, H, W)

    return sample


SPEED_FIELDS = (
    "params",
    "forward_gflops",
    "forward_s",
    "forward_backward_s",
    "sample_s",
    "peak_memory_forward_mb",
    "peak_memory_forward_backward_mb",
)


def speed_comparison(plan: Plan, device: torch.device) -> dict:
    """minimagic's VideoUNet vs diffusers' UNet3DConditionModel at the matched configuration of `plan.speed`."""
    setting = plan.speed
    torch.manual_seed(0)
    ours = video_unet(setting).to(device)
    config = ours.unet_config
    models = {"minimagic": ours, "diffusers": DiffusersPeer(config).to(device)}
    inputs = denoiser_inputs(setting, setting.latent, plan.batch, config.context_dim, device)
    vae = VAE(VAEConfig.preset(setting.vae_preset)).to(device).eval()
    tasks = {
        "forward": {name: forward_task(model, inputs, device) for name, model in models.items()},
        "forward_backward": {name: forward_backward_task(model, inputs, device) for name, model in models.items()},
        "sample": {
            name: sampling_task(model, vae, setting, config.context_dim, plan.sampling_steps, device)
            for name, model in models.items()
        },
    }
    forward = round_robin(tasks["forward"], plan.repeats, device)
    forward_backward = round_robin(tasks["forward_backward"], plan.repeats, device)
    sample = round_robin(tasks["sample"], plan.sampling_repeats, device, warmup=False)  # already warm
    results = {}
    for name, model in models.items():
        flops = count_flops(model, inputs)
        model.zero_grad(set_to_none=True)  # frees made before profiling are invisible to peak_memory
        results[name] = {
            "params": num_params(model),
            "forward_gflops": flops["total"] / 1e9,
            "forward_attention_gflops": flops["attention"] / 1e9,
            "forward_s": forward[name],
            "forward_backward_s": forward_backward[name],
            "sample_s": sample[name],
            "forward_gflop_per_s": flops["total"] / 1e9 / forward[name],
            "peak_memory_forward_mb": peak_memory(tasks["forward"][name], device) / 2**20,
            "peak_memory_forward_backward_mb": peak_memory(tasks["forward_backward"][name], device) / 2**20,
        }
    return {
        "setting": setting.name,
        "preset": setting.preset,
        "num_frames": setting.num_frames,
        "latent": list(setting.latent),
        "batch": plan.batch,
        "repeats": plan.repeats,
        "sampling_steps": plan.sampling_steps,
        "sampling_repeats": plan.sampling_repeats,
        "guidance_scale": GUIDANCE_SCALE,
        "models": results,
        "ratios": {key: results["minimagic"][key] / results["diffusers"][key] for key in SPEED_FIELDS},
    }


# ----------------------------------------------------------------------------------------------- 3. training
TOP_OPS = 10


def training_throughput(plan: Plan, device: torch.device) -> dict:
    """Clips/s of train.py's t2v step (eps loss, backward, clipping, AdamW, EMA) on the `plan.speed` model,
    and the top ops of one step by self time. Latents and contexts are random: in training they are
    pre-encoded and cached, so drawing a batch costs next to nothing."""
    setting = plan.speed
    torch.manual_seed(0)
    model = video_unet(setting).to(device).train()
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    diffusion = GaussianDiffusion().to(device)
    generator = torch.Generator().manual_seed(0)
    batch = denoiser_inputs(setting, setting.latent, plan.train_batch, model.unet_config.context_dim, device)
    fps = torch.full((plan.train_batch,), FPS, device=device)

    def step() -> None:
        with autocast(device):
            loss = diffusion.loss(model, batch["x"], generator, context=batch["context"], fps=fps)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema_update(ema, model, 0.999, step=1000)

    step_s = round_robin({"step": step}, plan.train_steps, device)["step"]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        synchronize(device)
    self_time = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = prof.key_averages()
    profiled_us = sum(getattr(event, self_time) for event in events)
    top = sorted(events, key=lambda event: getattr(event, self_time), reverse=True)[:TOP_OPS]
    gflops = count_flops(model, batch, backward=True)["total"] / 1e9
    return {
        "setting": setting.name,
        "num_frames": setting.num_frames,
        "latent": list(setting.latent),
        "batch": plan.train_batch,
        "steps": plan.train_steps,
        "step_s": step_s,
        "clips_per_s": plan.train_batch / step_s,
        "step_gflops": gflops,
        "gflop_per_s": gflops / step_s,
        "profiled": self_time,
        "profiled_ms": profiled_us / 1e3,
        "top_ops": [
            {
                "op": event.key,
                "calls": event.count,
                "self_ms": getattr(event, self_time) / 1e3,
                "share": getattr(event, self_time) / profiled_us,
            }
            for event in top
        ],
    }


# ----------------------------------------------------------------------------------------------- report
def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run(plan: Plan, device: torch.device) -> dict:
    """All three sections; the returned dict is what --out writes as JSON."""
    try:
        from diffusers import __version__ as diffusers_version
    except ModuleNotFoundError:
        diffusers_version = None
    meta = {
        "device": str(device),
        "machine": machine(device),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "torch": torch.__version__,
        "diffusers": diffusers_version,
        "python": platform.python_version(),
        "weights": "random (FLOPs and time do not depend on the weights)",
    }
    return {
        "meta": meta,
        "flops": [flop_comparison(setting) for setting in plan.flop_settings],
        "speed": speed_comparison(plan, device),
        "training": training_throughput(plan, device),
    }


def frame(shape: list[int]) -> str:
    channels, height, width = shape
    return f"{height}x{width}x{channels}"


def gflops(value: float) -> str:
    value /= 1e9
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}x"


def flops_section(rows: list[dict]) -> list[str]:
    lines = [
        "## 1. FLOPs of one denoiser forward: latent vs pixel space",
        "",
        "One forward of minimagic's VideoUNet (batch 1, no guidance) on latents, and of the same network with the",
        "pixels' channel count run on pixels (a VDM-style pixel-space 3D U-Net of the same width). Counted with",
        "`torch.utils.flop_counter.FlopCounterMode` on fake tensors (1 multiply-add = 2 FLOPs; matmuls,",
        "convolutions and attention only; the fused CPU attention kernel gets a registered formula).",
        "",
        "| setting | width | frames | latent frame | pixel frame | params (M) | latent GFLOPs | pixel GFLOPs "
        "| pixel / latent | positions ratio | elements ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | `{r['preset']}` | {r['num_frames']} | {frame(r['latent']['frame'])} "
            f"| {frame(r['pixel']['frame'])} | {r['latent']['params'] / 1e6:,.1f} "
            f"| {gflops(r['latent']['total'])} | {gflops(r['pixel']['total'])} | **{times(r['ratio'])}** "
            f"| {times(r['positions_ratio'])} | {times(r['elements_ratio'])} |"
        )
    lines += ["", "Where the FLOPs go (GFLOPs per forward):", ""]
    lines += ["| setting | part | latent | pixel | pixel / latent |", "|---|---|---|---|---|"]
    for r in rows:
        latent, pixel = r["latent"], r["pixel"]
        parts = [(k, latent[k], pixel[k], r["ratio_by_kind"][k]) for k in ("convolution", "matmul")]
        parts += [
            (f"attention: {k}", latent["attention_by_kind"][k], pixel["attention_by_kind"][k], r["ratio_by_kind"][k])
            for k in ATTENTION_KINDS.values()
        ]
        parts.append(("total", latent["total"], pixel["total"], r["ratio"]))
        self_attention = latent["attention_by_kind"]["spatial self-attention"]
        pixel_self_attention = pixel["attention_by_kind"]["spatial self-attention"]
        parts.append(
            (
                "total without spatial self-attention",
                latent["total"] - self_attention,
                pixel["total"] - pixel_self_attention,
                r["ratio_without_spatial_self_attention"],
            )
        )
        parts.append(("VAE decode of the clip (latent side, once per clip)", r["vae_decode"]["total"], 0, None))
        lines += [f"| {r['setting']} | {p} | {gflops(a)} | {gflops(b)} | {times(q)} |" for p, a, b, q in parts]
    paper = next((r for r in rows if r["setting"] == "paper"), rows[0])
    pixel_self = paper["pixel"]["attention_by_kind"]["spatial self-attention"]
    lines += [
        "",
        f"**Why about 64x** ({paper['setting']} setting). Convolutions, linear layers on image tokens, temporal "
        "attention and cross-attention all cost the same per spatial position, and going from "
        f"{frame(paper['latent']['frame'])} latents to {frame(paper['pixel']['frame'])} pixels multiplies the "
        f"positions by {paper['positions_ratio']:,.0f} (for the paper, (256/8)^2 = 64). The network's width is "
        "the same in both spaces (only conv_in and conv_out see 3 or 4 channels), so the convolutions scale by "
        f"{times(paper['ratio_by_kind']['convolution'])}; the matmuls by a little less "
        f"({times(paper['ratio_by_kind']['matmul'])}) because the text tokens' K/V projections and the timestep "
        "and FPS MLPs do not grow with the image. The raw element ratio "
        f"({times(paper['elements_ratio'])}) is not what counts: the cost follows positions times width.",
        "",
        "**Where it differs.** Spatial self-attention is quadratic in the positions, so it grows by "
        f"{times(paper['ratio_by_kind']['spatial self-attention'])}: the same network on pixels attends over "
        f"{paper['pixel']['frame'][1] * paper['pixel']['frame'][2]:,} tokens at its first level, and this one "
        f"term is {pixel_self / paper['pixel']['total']:.0%} of the pixel-space FLOPs, which makes the total "
        f"{times(paper['ratio'])}. A real pixel-space video U-Net (VDM) attends only at low resolutions; "
        f"without spatial self-attention the ratio is {times(paper['ratio_without_spatial_self_attention'])}, "
        "the paper's figure. The latent model also pays for the VAE decoder, but once per clip, not once per "
        f"step: {paper['vae_decode']['total'] / paper['latent']['total']:.1f} denoiser forwards' worth.",
        "",
    ]
    return lines


def speed_section(speed: dict) -> list[str]:
    ours, peer, ratios = speed["models"]["minimagic"], speed["models"]["diffusers"], speed["ratios"]
    columns = [
        ("params (M)", "params", 1e-6, ",.2f"),
        ("forward GFLOPs", "forward_gflops", 1, ",.2f"),
        ("forward (ms)", "forward_s", 1e3, ",.1f"),
        ("forward+backward (ms)", "forward_backward_s", 1e3, ",.1f"),
        (f"sampling, {speed['sampling_steps']} steps + decode (s/clip)", "sample_s", 1, ",.2f"),
        ("peak memory forward (MB)", "peak_memory_forward_mb", 1, ",.1f"),
        ("peak memory forward+backward (MB)", "peak_memory_forward_backward_mb", 1, ",.1f"),
    ]
    lines = [
        "## 2. Speed and memory: minimagic vs diffusers' UNet3DConditionModel",
        "",
        f"Matched configuration: `{speed['preset']}` width, {speed['num_frames']} frames of "
        f"{frame(speed['latent'])} latents, batch {speed['batch']} clips (forward and forward+backward); the "
        "peer is `UNet3DConditionModel` with the same block channels, ResBlocks per level, attention levels, "
        "heads, cross-attention width and norm groups. Sampling: one clip, classifier-free guidance (scale "
        f"{speed['guidance_scale']}, so a batch of 2), DDIM, then the toy VAE decodes frame by frame; the "
        f"text encoder is left out. Medians of {speed['repeats']} rounds ({speed['sampling_repeats']} for "
        "sampling); the models took turns in one process. Peak memory: bytes allocated on top of the weights "
        "(CPU: the profiler's allocator events; CUDA: `torch.cuda.max_memory_allocated`).",
        "",
        "| | " + " | ".join(title for title, *_ in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, row in (("minimagic", ours), ("diffusers", peer)):
        lines.append(f"| {name} | " + " | ".join(f"{row[k] * s:{fmt}}" for _, k, s, fmt in columns) + " |")
    lines.append("| **minimagic / diffusers** | " + " | ".join(f"{ratios[k]:.2f}" for _, k, *_ in columns) + " |")
    lines += [
        "",
        f"minimagic is **{1 / ratios['forward_backward_s']:.2f}x faster** in forward+backward "
        f"({1 / ratios['forward_s']:.2f}x in forward, {1 / ratios['sample_s']:.2f}x in sampling), while doing "
        f"{1 / ratios['forward_gflops']:.2f}x fewer FLOPs per forward: the peer's temporal conv stacks and "
        "temporal transformers (with feed-forward) are more work. Per FLOP, minimagic runs at "
        f"{ours['forward_gflop_per_s']:.1f} GFLOP/s in forward, the peer at {peer['forward_gflop_per_s']:.1f}. "
        f"Sampling one clip takes **{ours['sample_s']:.2f} s** with minimagic.",
        "",
    ]
    return lines


def training_section(training: dict) -> list[str]:
    lines = [
        "## 3. Training throughput",
        "",
        f"train.py's t2v step (eps loss, backward, gradient clipping, AdamW, EMA) on the `{training['setting']}` "
        f"VideoUNet, batch {training['batch']} clips of {training['num_frames']} frames of "
        f"{frame(training['latent'])} latents: **{training['clips_per_s']:.2f} clips/s** "
        f"({training['step_s']:.2f} s per step, median of {training['steps']}; {training['step_gflops']:,.1f} "
        f"GFLOP per step, {training['gflop_per_s']:.1f} GFLOP/s).",
        "",
        f"Top ops of one profiled step by {training['profiled'].replace('_', ' ')} "
        f"({training['profiled_ms']:,.0f} ms profiled in all):",
        "",
        "| op | calls | self ms | share |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| `{op['op']}` | {op['calls']} | {op['self_ms']:,.1f} | {op['share']:.1%} |" for op in training["top_ops"]
    ]
    return lines + [""]


def render_markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [
        "# Efficiency: MagicVideo's \"64x fewer FLOPs\" measured on minimagic",
        "",
        f"Generated by `{meta['command']}`; the raw numbers are in the JSON file it writes. Rerun it rather than",
        "editing this file.",
        "",
        f"Machine: {meta['machine']} ({meta['device']}, {meta['threads']} thread(s) of {meta['cpu_count']} "
        f"cores, {meta['precision']}); torch {meta['torch']}, diffusers {meta['diffusers']}. Weights: "
        f"{meta['weights']}.",
    ]
    if meta.get("note"):
        lines += ["", meta["note"]]
    lines.append("")
    lines += flops_section(results["flops"])
    lines += speed_section(results["speed"])
    lines += training_section(results["training"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny configs: every field in a few seconds")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, ...")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--md", type=Path, help="write the markdown report here")
    parser.add_argument("--note", help="a sentence about the machine, for the report (e.g. its load)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    results = run(QUICK if args.quick else FULL, pick_device(args.device))
    command = " ".join(["python bench/efficiency.py", *(sys.argv[1:] if argv is None else argv)])
    threads = os.environ.get("OMP_NUM_THREADS")
    results["meta"].update(
        command=f"OMP_NUM_THREADS={threads} {command}" if threads else command, quick=args.quick, note=args.note
    )
    report = render_markdown(results)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(report + "\n")
    return results


if __name__ == "__main__":
    main()
