"""One checkpoint layout for every pipeline of minimagic (t2i, t2v, interp): a denoiser and all it needs.

    DIR/model.safetensors   the denoiser's weights, in float16 (a few MB)
    DIR/config.json         {"stage", "config": {<the denoiser's configs>, "diffusion", "text_encoder",
                             "max_length", "image_size"}, "command", "step", ...}
    DIR/vae/                the VAE whose latents it denoises (docs/paper.md §1)
    DIR/videovae/           optionally, the VideoVAE decoder (docs/paper.md §5)

`text_encoder` is null for the default MiniLM, else a Hugging Face name or folder. The folder is written
as one unit (`checkpoint.write_folder`).
"""

from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from minimagic import checkpoint
from minimagic.diffusion import DiffusionConfig, GaussianDiffusion
from minimagic.paths import CHECKPOINTS
from minimagic.text import TextEncoder, default_model_path
from minimagic.vae import VAE
from minimagic.videovae import VideoVAE

PIPELINE_STAGES = ("t2i", "t2v", "interp")
PIPELINE_KEYS = ("diffusion", "text_encoder", "max_length", "image_size")


def default_checkpoint() -> Path:
    """The furthest shipped stage: the text-to-video model, else the text-to-image model."""
    for name in ("t2v-moving-digits", "t2i-moving-digits"):
        if (CHECKPOINTS / name / checkpoint.CONFIG).is_file():
            return CHECKPOINTS / name
    raise FileNotFoundError(f"no shipped t2v or t2i checkpoint under {CHECKPOINTS}")


def save_pipeline(directory: str | Path, stage: str, model: nn.Module, model_config: dict, diffusion: GaussianDiffusion,
                  text_encoder: TextEncoder, vae: VAE, image_size: int, videovae: VideoVAE | None = None,
                  **info) -> Path:
    """Write the pipeline folder of `stage`; `model_config` holds what rebuilds `model` ("unet", ...)."""
    name = text_encoder.name_or_path
    config = {**model_config, "diffusion": asdict(diffusion.config),
              "text_encoder": None if name == default_model_path() else name,
              "max_length": text_encoder.max_length, "image_size": image_size}
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}

    def write(folder: Path) -> None:
        checkpoint.write_files(folder, half, stage, config, **info)
        vae.save_pretrained(folder / "vae")
        if videovae is not None:
            videovae.save_pretrained(folder / "videovae")

    return checkpoint.write_folder(directory, write)


@dataclass
class PipelineParts:
    """What a pipeline folder holds besides its denoiser (which the caller builds from `config`)."""

    meta: dict
    config: dict
    diffusion: GaussianDiffusion
    text_encoder: TextEncoder
    vae: VAE
    videovae: VideoVAE | None
    image_size: int


def load_pipeline(directory: str | Path, stages: tuple[str, ...] = PIPELINE_STAGES) -> PipelineParts:
    """Read a pipeline folder of one of `stages`; the denoiser's weights stay for `checkpoint.load_weights`."""
    directory = Path(directory)
    meta = checkpoint.load_meta(directory)
    if meta["stage"] not in stages:
        raise ValueError(f"{directory} holds a '{meta['stage']}' checkpoint, expected {' or '.join(map(repr, stages))}")
    config = meta["config"]
    if missing := [key for key in PIPELINE_KEYS if key not in config]:
        raise ValueError(f"{directory / checkpoint.CONFIG} is missing {missing}: not a pipeline checkpoint")
    if not isinstance(config["image_size"], int) or config["image_size"] < 1:
        raise ValueError(f"{directory / checkpoint.CONFIG}: image_size must be a positive int")
    text = TextEncoder(config["text_encoder"], max_length=config["max_length"])
    videovae = VideoVAE.from_pretrained(directory / "videovae") if (directory / "videovae").is_dir() else None
    return PipelineParts(meta, config, GaussianDiffusion(DiffusionConfig(**config["diffusion"])), text,
                         VAE.from_pretrained(directory / "vae"), videovae, config["image_size"])
