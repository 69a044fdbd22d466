"""The README's one picture per notebook, made from the shipped checkpoints and result files (no training).

Each figure shows, on held-out digits (the test split, never in training), what its notebook is about; the
notebooks themselves draw these and more. About a minute on two CPU cores:

    python scripts/make_figures.py --out docs/figures
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from minimagic.adaptor import FrameAdaptor  # noqa: E402
from minimagic.data import MovingDigits  # noqa: E402
from minimagic.pipeline import TextToVideoPipeline  # noqa: E402
from minimagic.temporal_attention import DirectedTemporalAttention  # noqa: E402
from minimagic.video import frame_grid  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["the digit three moves left", "the digit six moves up and to the left", "the digit eight moves down"]


def show_rows(rows: list[torch.Tensor], labels: list[str], title: str) -> plt.Figure:
    """One row of images per tensor (N, 1, H, W) in [-1, 1] (or [0, 1] maps), its label on the left."""
    columns = max(len(row) for row in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.1 * columns, 1.15 * len(rows)), squeeze=False)
    for r, (row, label) in enumerate(zip(rows, labels, strict=True)):
        for c in range(columns):
            axes[r, c].set(xticks=[], yticks=[])
            if c < len(row):
                axes[r, c].imshow(row[c, 0].float(), cmap="gray", vmin=-1 if row.min() < 0 else 0, vmax=1)
            else:
                axes[r, c].axis("off")
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def held_out_clips(n: int) -> tuple[torch.Tensor, list[str]]:
    items = [MovingDigits("test", length=n)[i] for i in range(n)]
    return torch.stack([item["video"] for item in items]), [item["caption"] for item in items]  # (n, F, 1, H, W)


def data_figure(pipe: TextToVideoPipeline) -> plt.Figure:
    videos, captions = held_out_clips(3)
    return frame_grid(videos, captions)


def vae_figure(pipe: TextToVideoPipeline) -> plt.Figure:
    x = held_out_clips(8)[0][:, 0]  # (8, 1, H, W): the first frame of 8 held-out clips
    with torch.no_grad():
        z = pipe.vae.encode(x).mode()  # (8, c, h, w)
        recon = pipe.vae.decode(z).clamp(-1, 1)
    latent = (z[:, :1] - z[:, :1].amin()) / (z[:, :1].amax() - z[:, :1].amin())  # channel 0, shown in [0, 1]
    return show_rows([x, latent, recon], ["frame x", "latent z, ch. 0", "D(E(x))"],
                     f"VAE: {tuple(x.shape[1:])} -> {tuple(z.shape[1:])} -> back")


def diffusion_figure(pipe: TextToVideoPipeline) -> plt.Figure:
    x0 = held_out_clips(1)[0][0, :1]  # (1, 1, H, W)
    steps = [0, 100, 250, 500, 750, 999]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    noisy = torch.cat([pipe.diffusion.q_sample(x0, torch.tensor([t]), noise) for t in steps]).clamp(-1, 1)
    fig = show_rows([noisy], ["x_t"], "q(x_t | x_0) at t = " + ", ".join(map(str, steps)))
    return fig


def adaptor_figure(pipe: TextToVideoPipeline) -> plt.Figure:
    adaptors = [m for m in pipe.unet.modules() if isinstance(m, FrameAdaptor)]
    scale = torch.stack([(a.scale.float() - 1).abs().mean(1) for a in adaptors])  # (layers, F): mean |S_i - 1|
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    image = ax.imshow(scale.detach(), aspect="auto", cmap="viridis")
    ax.set(xlabel="frame i", ylabel="adapted conv (input to output)",
           title=f"shipped t2v: mean |S_i - 1| of {len(adaptors)} adaptors")
    fig.colorbar(image)
    fig.tight_layout()
    return fig


def attention_figure(pipe: TextToVideoPipeline) -> plt.Figure:
    videos, captions = held_out_clips(4)
    layers = [m for m in pipe.unet.modules() if isinstance(m, DirectedTemporalAttention)]
    captured = {}
    handle = layers[len(layers) // 2].register_forward_pre_hook(lambda module, args: captured.update(z=args[0]))
    with torch.no_grad():
        x0 = pipe.vae.encode_video(videos, torch.Generator().manual_seed(0))  # (4, F, c, h, w)
        t = torch.full((4,), 500)
        z_t = pipe.diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)))
        pipe.unet(z_t, t, pipe.text_encoder.encode(captions)[0], fps=8.0)
        weights = layers[len(layers) // 2].attention_weights(captured["z"]).mean((0, 1, 2, 3))  # (F, F)
    handle.remove()
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    image = ax.imshow(weights, cmap="magma")
    ax.set(xlabel="key frame q", ylabel="query frame p", title="directed temporal attention (t = 500)")
    fig.colorbar(image)
    fig.tight_layout()
    return fig


def generated_figure(pipe: TextToVideoPipeline) -> plt.Figure:
    videos = pipe(PROMPTS, num_inference_steps=50, guidance_scale=7.5, generator=torch.Generator().manual_seed(0))
    return frame_grid(videos, PROMPTS)


def videovae_figure(pipe: TextToVideoPipeline) -> plt.Figure:
    video = held_out_clips(1)[0]  # (1, F, 1, H, W)
    with torch.no_grad():
        z = pipe.vae.encode_video(video, torch.Generator().manual_seed(0))
        decoded = {"image VAE": pipe.vae.decode_video(z).clamp(-1, 1),  # what is shown
                   "VideoVAE": pipe.videovae.decode_video(z).clamp(-1, 1)}
    truth = video[0, 1:] - video[0, :-1]  # (F-1, 1, H, W): x_{i+1} - x_i
    rows = [video[0]] + [((d[0, 1:] - d[0, :-1]) - truth).abs().clamp(0, 0.25) * 4 for d in decoded.values()]
    return show_rows(rows, ["clip"] + [f"{name}: |Δx̂ - Δx|" for name in decoded],
                     "flicker: frame-to-frame error of each decoder (x4)")


def interpolation_figure(pipe: TextToVideoPipeline) -> plt.Figure:
    videos, captions = held_out_clips(1)
    truth = videos[0, :5]  # (5, 1, H, W): the digit moves 12 px from frame 0 to frame 4
    with torch.no_grad():
        z = pipe.vae.encode_video(videos[:, [0, 4]], torch.Generator().manual_seed(0))  # (1, 2, c, h, w)
        filled = pipe.frame_interpolator(3).interpolate_video(
            z, 3, pipe.text_encoder.encode(captions)[0], 25, torch.Generator().manual_seed(0))
        interpolated = pipe.vae.decode_video(filled)[0].clamp(-1, 1)
    weights = torch.linspace(0, 1, 5)[:, None, None, None]
    blended = (1 - weights) * truth[:1] + weights * truth[-1:]
    return show_rows([truth, interpolated, blended], ["truth", "interpolated", "blended"],
                     "3 frames between two keyframes 12 px apart")


def evaluation_figure(pipe: TextToVideoPipeline) -> plt.Figure:
    accuracy = json.loads((ROOT / "docs/results/t2i.json").read_text())["accuracy"]
    fig, ax = plt.subplots(figsize=(3.8, 2.8))
    ax.plot([float(s) for s in accuracy], [100 * a for a in accuracy.values()], "o-")
    ax.set(xlabel="guidance scale s", ylabel="% classified as the prompt's digit", ylim=(50, 100),
           title="t2i, 500 held-out images per scale")
    fig.tight_layout()
    return fig


def efficiency_figure(pipe: TextToVideoPipeline) -> plt.Figure:
    flops = next(row for row in json.loads((ROOT / "docs/efficiency.json").read_text())["flops"]
                 if row["setting"] == "paper")
    kinds = ["convolution", "matmul", *flops["latent"]["attention_by_kind"]]
    values = {side: [(flops[side].get(k) or flops[side]["attention_by_kind"][k]) / 1e12 for k in kinds]
              for side in ("latent", "pixel")}
    fig, ax = plt.subplots(figsize=(5.2, 2.8))
    positions = torch.arange(len(kinds)).float()
    for shift, side in ((-0.2, "latent"), (0.2, "pixel")):
        ax.barh(positions + shift, values[side], height=0.4, label=f"{side} {tuple(flops[side]['frame'])}")
    ax.set(yticks=positions.tolist(), yticklabels=kinds, xscale="log", xlabel="TFLOPs per denoiser forward",
           title="16 frames at 256x256: pixels vs latents")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


FIGURES = {
    "00_data": data_figure, "01_vae_latents": vae_figure, "02_diffusion": diffusion_figure,
    "03_adaptor": adaptor_figure, "04_directed_temporal_attention": attention_figure,
    "06_text_to_video": generated_figure, "07_videovae": videovae_figure,
    "08_frame_interpolation": interpolation_figure, "09_evaluation": evaluation_figure,
    "10_efficiency": efficiency_figure,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    parser.add_argument("--only", nargs="*", choices=sorted(FIGURES), help="make only these figures")
    args = parser.parse_args()
    torch.manual_seed(0)
    pipe = TextToVideoPipeline.from_pretrained()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or FIGURES:
        fig = FIGURES[name](pipe)
        fig.savefig(args.out / f"{name}.png", dpi=80, bbox_inches="tight")
        plt.close(fig)
        print(f"wrote {args.out / name}.png ({(args.out / f'{name}.png').stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
