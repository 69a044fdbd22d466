"""The pretrained T2I U-Net that MagicVideo inflates (docs/paper.md §4): Stable Diffusion v1's, loaded into UNet2D.

MagicVideo starts from a pre-trained text-to-image latent U-Net. Stable Diffusion v1's (diffusers'
`UNet2DConditionModel`, 860 M parameters) has minimagic's `base` layout: the same ResBlocks, SD v1 spatial
transformers (1x1-conv projections, GEGLU), stride-2 downsampling, nearest-neighbour upsampling and sinusoidal
timestep features [cos, sin]. Loading is renaming, module by module in UNet2D's own order, plus one merge:
attention's K and V projections (`to_k`, `to_v`) become our single `to_kv`. The weights cannot be shipped:
pass a folder, e.g. made with `huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5
--include "unet/*" --local-dir sd15` (then `sd15` or `sd15/unet`). `scripts/convert_sd.py` assembles a
t2i pipeline from it (with SD's VAE and CLIP) that `train t2v --init` inflates.
"""

import json
from pathlib import Path

import torch

from minimagic.checkpoint import load_state_dict
from minimagic.unet import UNet2D, UNetConfig

UNET_HINT = ("supply a folder holding Stable Diffusion v1's U-Net in the diffusers format ([unet/]config.json and "
             "[unet/]diffusion_pytorch_model.safetensors), e.g. from `huggingface-cli download "
             "stable-diffusion-v1-5/stable-diffusion-v1-5 --include 'unet/*' --local-dir sd15`")
# UNet2DConditionModel options that UNet2D does not have: SD v1's values are required
SD_V1_OPTIONS = {"use_linear_projection": False, "transformer_layers_per_block": 1, "flip_sin_to_cos": True,
                 "freq_shift": 0, "act_fn": "silu", "time_embedding_type": "positional", "class_embed_type": None,
                 "addition_embed_type": None, "only_cross_attention": False, "resnet_time_scale_shift": "default",
                 "conv_in_kernel": 3, "conv_out_kernel": 3, "time_embedding_dim": None, "dual_cross_attention": False,
                 "mid_block_type": "UNetMidBlock2DCrossAttn", "encoder_hid_dim": None, "center_input_sample": False,
                 "downsample_padding": 1, "mid_block_scale_factor": 1, "resnet_out_scale_factor": 1.0,
                 "resnet_skip_time_act": False, "num_class_embeds": None}
# one name segment of ours -> diffusers' (a SpatialTransformer's `block` is its transformer_blocks.0)
SEGMENTS = {"emb_proj": "time_emb_proj", "skip": "conv_shortcut", "block": "transformer_blocks.0",
            "to_out": "to_out.0", "ff_in": "ff.net.0.proj", "ff_out": "ff.net.2"}


def unet_config_from_diffusers(config: dict, **overrides) -> UNetConfig:
    """The UNetConfig of a diffusers UNet2DConditionModel config.json; ValueError if it is not SD v1's layout."""
    if config.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
        raise ValueError(f"this is a {config['_class_name']!r}, not a diffusers UNet2DConditionModel: {UNET_HINT}")
    for key, value in SD_V1_OPTIONS.items():
        if config.get(key, value) not in (value, [value], (value,)):
            raise ValueError(f"{key}={config[key]!r} is not Stable Diffusion v1's layout (needs {value!r})")
    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    attention = [kind == "CrossAttnDownBlock2D" for kind in down]
    expected_up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)]
    if any(kind not in ("CrossAttnDownBlock2D", "DownBlock2D") for kind in down) or up != expected_up:
        raise ValueError(f"down/up blocks {down} / {up} are not Stable Diffusion v1's layout")
    heads = config.get("num_attention_heads") or config["attention_head_dim"]  # SD v1 names its head count so
    if isinstance(heads, (list, tuple)):
        if len(set(heads)) != 1:
            raise ValueError(f"one head count per level {heads} is not supported (SD v1 has 8 everywhere)")
        heads = heads[0]
    return UNetConfig(in_channels=config["in_channels"], out_channels=config["out_channels"],
                      channels=tuple(config["block_out_channels"]), num_res_blocks=config["layers_per_block"],
                      attention_levels=tuple(attention), num_heads=heads, context_dim=config["cross_attention_dim"],
                      norm_groups=config["norm_num_groups"], norm_eps=config.get("norm_eps", 1e-5), **overrides)


def module_names(c: UNetConfig) -> dict[str, str]:
    """Our module name -> diffusers' module name, walking the levels in UNet2D.__init__'s order."""
    names = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
             "conv_in": "conv_in", "norm_out": "conv_norm_out", "conv_out": "conv_out",
             "mid.0": "mid_block.resnets.0", "mid.1": "mid_block.attentions.0", "mid.2": "mid_block.resnets.1"}
    k, levels = 0, len(c.channels)
    for level in range(levels):
        for j in range(c.num_res_blocks):
            names[f"down.{k}.0"] = f"down_blocks.{level}.resnets.{j}"
            if c.attention_levels[level]:
                names[f"down.{k}.1"] = f"down_blocks.{level}.attentions.{j}"
            k += 1
        if level < levels - 1:  # the stride-2 conv, inside its nn.Sequential
            names[f"down.{k}.0.0"] = f"down_blocks.{level}.downsamplers.0.conv"
            k += 1
    k = 0
    for block, level in enumerate(reversed(range(levels))):
        for j in range(c.num_res_blocks + 1):
            names[f"up.{k}.0"] = f"up_blocks.{block}.resnets.{j}"
            if c.attention_levels[level]:
                names[f"up.{k}.1"] = f"up_blocks.{block}.attentions.{j}"
            if level > 0 and j == c.num_res_blocks:  # Sequential(Upsample, Conv2d): the conv is its .1
                names[f"up.{k}.{1 + c.attention_levels[level]}.1"] = f"up_blocks.{block}.upsamplers.0.conv"
            k += 1
    return names


def convert_state_dict(state: dict[str, torch.Tensor], config: UNetConfig) -> dict[str, torch.Tensor]:
    """A diffusers SD v1 U-Net state dict -> UNet2D(config)'s; ValueError naming a missing, mis-shaped or
    unexpected tensor."""
    names = module_names(config)
    with torch.device("meta"):
        targets = UNet2D(config).state_dict()  # names and shapes only, nothing allocated
    converted, used = {}, set()
    for key, target in targets.items():
        prefix = max((p for p in names if key.startswith(p + ".")), key=len)
        segments = [SEGMENTS.get(segment, segment) for segment in key[len(prefix) + 1 :].split(".")]
        source = ".".join([names[prefix], *segments])
        parts = [source.replace("to_kv", kv) for kv in ("to_k", "to_v")] if "to_kv" in source else [source]
        expected = (target.shape[0] // len(parts), *target.shape[1:])  # K and V: half of to_kv's rows each
        for part in parts:
            if part not in state:
                raise ValueError(f"tensor {part} is missing")
            if tuple(state[part].shape) != expected:
                raise ValueError(f"tensor {part} has shape {tuple(state[part].shape)}, expected {expected}")
        converted[key] = torch.cat([state[part] for part in parts])  # to_kv = [to_k; to_v]
        used.update(parts)
    if unexpected := sorted(set(state) - used):
        raise ValueError(f"unexpected tensor {unexpected[0]} ({len(unexpected)} in all): not SD v1's layout")
    return converted


def unet_folder(path: str | Path) -> Path:
    """The folder holding the U-Net's config.json: `PATH/unet` or `PATH` itself."""
    path = Path(path)
    for folder in (path / "unet", path):
        if (folder / "config.json").is_file():
            return folder
    raise FileNotFoundError(f"no diffusers U-Net in {path}: {UNET_HINT}")


def load_sd_unet(path: str | Path, **overrides) -> UNet2D:
    """Stable Diffusion v1's U-Net from a diffusers folder as a UNet2D (config from its config.json)."""
    folder = unet_folder(path)
    config = unet_config_from_diffusers(json.loads((folder / "config.json").read_text()), **overrides)
    weights = folder / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing (only safetensors weights load): {UNET_HINT}")
    state = load_state_dict(weights)
    try:
        state = convert_state_dict(state, config)
    except ValueError as error:
        raise ValueError(f"{weights}: {error}") from None
    unet = UNet2D(config)
    unet.load_state_dict(state)
    return unet
