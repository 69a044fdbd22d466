"""One GPU for the `base` preset (docs/paper.md §7): parameters, activation memory and FLOPs of a t2v training step.

Counted on the meta device, so nothing is allocated or computed and the (random) weights do not matter: the
VideoUNet at `base` width (Stable Diffusion v1's U-Net inflated to 16 frames) on one clip of 16 x 32x32x4
latents with CLIP's 77 x 768 text context, with and without gradient checkpointing (UNetConfig).

- activation memory per clip: the bytes autograd saves for backward (`saved_tensors_hooks`, each storage once,
  weights excluded), with attention counted as a fused GPU kernel (flash / memory-efficient) keeps it: q, k, v,
  the output and the log-sum-exp, linear in the tokens. In fp32; bf16 autocast keeps less (norms stay fp32,
  the rest halves), so fp32 is the safe bound, and the pure-bf16 count is the floor. With checkpointing, what
  stays from forward to backward is the layers outside the U-Net blocks plus each block's inputs; one block at a
  time is recomputed, so the peak adds the largest block's activations.
- FLOPs per clip and training step: FlopCounterMode over forward + backward (checkpointing runs the blocks'
  forward twice).
- which batch fits: model states (fp32 weights, their gradients and AdamW's two moments for what is trained, and
  the EMA copy: 20 bytes per parameter when all train) + batch x fp32 activations <= 90% of the GPU's memory
  minus 1 GiB (CUDA context, allocator slack, the transient gradients of backward). "2D frozen" trains only the
  new layers (`VideoUNet.freeze_2d`).

    python bench/gpu_memory.py --md docs/efficiency.md   # CPU, under a minute; rewrites only its own section
"""

import argparse
import math
import sys
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_section import write_section  # noqa: E402

from minimagic.unet import UNetConfig  # noqa: E402
from minimagic.video_unet import VideoUNet, VideoUNetConfig  # noqa: E402

GIB = 2**30
GPUS_GIB = (16, 24, 40, 48, 80, 141)  # common cards: T4/V100-16, 4090/A10, A100-40, L40S/A6000, A100/H100-80, H200
BEGIN, END = "<!-- bench/gpu_memory.py: begin -->", "<!-- bench/gpu_memory.py: end -->"


class FusedAttention(torch.autograd.Function):
    """What a fused attention kernel saves for backward: q, k, v, the output and the log-sum-exp per query."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = q.new_empty(*q.shape[:-1], v.shape[-1])  # (N, heads, T, d)
        ctx.save_for_backward(q, k, v, out, q.new_empty(q.shape[:-1], dtype=torch.float32))
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v = ctx.saved_tensors[:3]
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def fused_attention(q, k, v, attn_mask=None, is_causal=False, **_):
    return FusedAttention.apply(q, k, v)


def build(preset: str, checkpointing: bool, num_frames: int | None = None, context_dim: int | None = None):
    """The t2v denoiser of `preset` on the meta device."""
    unet = UNetConfig.preset(preset, gradient_checkpointing=checkpointing,
                             **({"context_dim": context_dim} if context_dim else {}))
    with torch.device("meta"):
        return VideoUNet(VideoUNetConfig.preset(preset, unet=unet, **({"num_frames": num_frames} if num_frames
                                                                        else {})))


def inputs(model: VideoUNet, latent: tuple[int, int, int], tokens: int, dtype: torch.dtype) -> dict:
    with torch.device("meta"):
        return {"x": torch.empty(1, model.num_frames, *latent, dtype=dtype), "t": torch.zeros(1, dtype=torch.long),
                "context": torch.empty(1, tokens, model.unet_config.context_dim, dtype=dtype), "fps": 8.0}


def saved_bytes(model: VideoUNet, batch: dict) -> dict:
    """Bytes saved for backward by one forward: `outside` the U-Net blocks, `blocks` (inside each block) and
    `block_inputs` (each block's h, emb, context: all that a checkpointed block keeps)."""
    unet, seen = model.unet, {StorageWeakRef(p.untyped_storage()).cdata for p in model.parameters()}
    blocks = [*unet.down, unet.mid, *unet.up]
    buckets, kept, current = {"outside": 0, **{i: 0 for i in range(len(blocks))}}, {}, ["outside"]
    index, run_block = {id(layers): i for i, layers in enumerate(blocks)}, unet._run_block

    def tracked_block(layers, *args):
        for value in args:  # h, emb, context: the inputs a checkpointed block keeps
            if torch.is_tensor(value):
                kept[StorageWeakRef(value.untyped_storage()).cdata] = value.untyped_storage().nbytes()
        current.append(index[id(layers)])
        try:
            return run_block(layers, *args)
        finally:
            current.pop()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = StorageWeakRef(tensor.untyped_storage()).cdata
        if key not in seen:
            seen.add(key)
            buckets[current[-1]] += tensor.untyped_storage().nbytes()
        return tensor

    with mock.patch.object(unet, "_run_block", tracked_block), mock.patch.object(F, "scaled_dot_product_attention",
                                                                                   fused_attention):
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(**batch)
    block_bytes = [buckets[i] for i in range(len(blocks))]
    return {"outside": buckets["outside"], "blocks": block_bytes, "block_inputs": sum(kept.values())}


def activation_bytes(plain: dict, checkpointed: dict | None = None) -> int:
    """Peak saved activations of one training step, from `saved_bytes` of the plain model: all of them; or,
    given `saved_bytes` of the checkpointed one, what it keeps plus the largest block, recomputed in backward."""
    kept = plain if checkpointed is None else checkpointed
    return kept["outside"] + sum(kept["blocks"]) + (0 if checkpointed is None else max(plain["blocks"]))


def training_flops(model: VideoUNet, batch: dict) -> int:
    with FlopCounterMode(display=False) as counter:
        model(**batch).sum().backward()
    return counter.get_total_flops()


def state_bytes(counts: dict, frozen_2d: bool) -> int:
    """fp32 weights + EMA copy (all parameters), + gradients and AdamW's two moments (trained ones)."""
    trained = counts["new"] if frozen_2d else counts["total"]
    return 4 * 2 * counts["total"] + 4 * 3 * trained


def max_batch(gpu_gib: float, states: int, per_clip: int) -> int:
    """Clips per step that fit: states + batch x activations <= 0.9 x memory - 1 GiB."""
    return max(0, math.floor((0.9 * gpu_gib * GIB - GIB - states) / per_clip))


def measure(preset: str = "base", latent: tuple[int, int, int] = (4, 32, 32), tokens: int = 77, **options) -> dict:
    models = {mode: build(preset, mode == "checkpointing", **options) for mode in ("plain", "checkpointing")}
    results = {mode: {"flops": training_flops(model, inputs(model, latent, tokens, torch.float32))}
               for mode, model in models.items()}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        saved = {mode: saved_bytes(model.to(dtype), inputs(model, latent, tokens, dtype))
                 for mode, model in models.items()}
        results["plain"][f"activations_{name}"] = activation_bytes(saved["plain"])
        results["checkpointing"][f"activations_{name}"] = activation_bytes(saved["plain"], saved["checkpointing"])
    results["parameters"] = models["plain"].parameter_counts()
    return results


def markdown(results: dict, command: str) -> str:
    counts, plain, ckpt = results["parameters"], results["plain"], results["checkpointing"]
    gb = lambda n: f"{n / GIB:.2f}"  # noqa: E731
    lines = [BEGIN, "## 4. One GPU: memory and FLOPs of a `base` t2v training step", "",
             f"Generated by `{command}` (CPU, meta device: counted, not run; random weights). "
             "The `base` VideoUNet (Stable Diffusion v1's U-Net inflated to 16 frames), one clip = 16 x 32x32x4 "
             "latents, CLIP context 77 x 768. Activation memory is what autograd saves for backward, with "
             "attention as a fused GPU kernel saves it; fp32 is the safe bound (bf16 autocast keeps less, the "
             "pure-bf16 count is the floor).", "",
             f"Parameters: **{counts['total'] / 1e6:.1f} M** ({counts['reused'] / 1e6:.1f} M reused 2D, "
             f"{counts['new'] / 1e6:.1f} M new: adaptors {counts['adaptor'] / 1e6:.2f} M, temporal attention "
             f"{counts['temporal'] / 1e6:.1f} M, FPS {counts['fps'] / 1e6:.2f} M). Model states: "
             f"{gb(state_bytes(counts, False))} GiB training everything (fp32 weights, gradients, AdamW moments, "
             f"EMA copy), {gb(state_bytes(counts, True))} GiB with the 2D weights frozen.", "",
             "| per clip and training step | without checkpointing | with checkpointing |", "|---|---|---|",
             f"| activations, fp32 (GiB) | {gb(plain['activations_fp32'])} | {gb(ckpt['activations_fp32'])} |",
             f"| activations, pure bf16 (GiB) | {gb(plain['activations_bf16'])} | {gb(ckpt['activations_bf16'])} |",
             f"| TFLOPs (forward + backward) | {plain['flops'] / 1e12:.2f} | {ckpt['flops'] / 1e12:.2f} |", "",
             "Clips per step that fit (fp32 activations, 90% of the memory minus 1 GiB; a larger batch via "
             "`--grad-accum`). `base` turns checkpointing on; \"2D frozen\" trains only the new layers "
             "(`VideoUNet.freeze_2d()`, from Python: the CLI trains all), and `--ema-decay 0` saves the EMA copy's "
             f"{gb(4 * counts['total'])} GiB:", "",
             "| GPU memory (GiB) | all trained | all trained, checkpointing | 2D frozen | 2D frozen, checkpointing |",
             "|---|---|---|---|---|"]
    for gib in GPUS_GIB:
        fits = [max_batch(gib, state_bytes(counts, frozen), results[mode]["activations_fp32"])
                for frozen in (False, True) for mode in ("plain", "checkpointing")]
        lines.append(f"| {gib} | " + " | ".join(str(n) if n else "-" for n in fits) + " |")
    lines += ["", "Verified here: the numbers above (CPU, meta device), and on tiny models that checkpointing "
              "leaves the gradients unchanged (tests/test_gradient_checkpointing.py). Not verified: no GPU run, "
              "so neither the real peak memory (allocator, cuDNN workspaces) nor the speed cost of recomputation.",
              END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--md", type=Path, help="write the section into this Markdown file")
    args = parser.parse_args()
    command = "python bench/gpu_memory.py" + (f" --md {args.md}" if args.md else "")
    section = markdown(measure(), command)
    print(section)
    if args.md:
        write_section(args.md, section, BEGIN, END)


if __name__ == "__main__":
    main()
