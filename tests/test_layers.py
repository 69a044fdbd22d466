"""minimagic's modules in layers: each imports only from its own layer and the ones below (no model file knows
about training, evaluation or the pipeline)."""

import ast
from pathlib import Path

import minimagic

LAYERS = [  # lowest first
    {"paths", "embedding", "allocator", "compilation", "device", "checkpoint"},
    {"data", "video", "videofolder", "text"},
    {"autoencoder", "vae", "adaptor", "spatial_transformer", "temporal_attention", "unet", "video_unet", "videovae",
     "diffusion", "dpm_solver", "guidance", "interpolation", "pretrained", "sd_unet", "metrics", "strokes",
     "video_classifier", "fvd", "superres", "bounces"},  # the models
    {"streaming", "pipeline_folder", "pipeline"},
    {"evaluate", "exercises"},
    {"clips", "sdedit", "distributed", "train_state", "train", "stages"},  # training
    {"flags", "generate", "__main__"},  # the command line
]
LAYER = {name: index for index, names in enumerate(LAYERS) for name in names}
PACKAGE = Path(minimagic.__file__).parent


def layer_of(module: str) -> int | None:
    """minimagic.stages.t2v -> the layer of "stages"; None for modules outside the table."""
    parts = module.split(".")
    return LAYER.get(parts[1]) if parts[0] == "minimagic" and len(parts) > 1 else None


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):  # function-level imports too
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if layer_of(name) is not None}


def upward_imports() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(("minimagic", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        own = layer_of(module)
        if own is None:
            continue
        found += sorted(f"{module} -> {name}" for name in imports(path) if layer_of(name) > own)
    return found


def test_no_module_imports_from_a_higher_layer():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    (tmp_path / "unet.py").write_text("from minimagic.train import train\n")
    monkeypatch.setattr("test_layers.PACKAGE", tmp_path)
    assert upward_imports() == ["minimagic.unet -> minimagic.train", "minimagic.unet -> minimagic.train.train"]


def test_every_module_has_a_layer():
    """A new module outside the table would escape the check above."""
    top = {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in PACKAGE.rglob("*.py")}
    assert sorted(top - set(LAYER) - {"__init__"}) == []
