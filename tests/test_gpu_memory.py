"""bench/gpu_memory.py: its saved-tensor count sees checkpointing, attention stays linear, the batch arithmetic."""


import pytest
import torch

LATENT = (4, 16, 16)


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("bench/gpu_memory.py")


def test_checkpointed_model_saves_only_what_lies_outside_its_blocks(bench):
    """Counted on the real checkpointed VideoUNet: of each block only its inputs are kept, outside all as without."""
    saved = {}
    for checkpointing in (False, True):
        model = bench.build("tiny", checkpointing, num_frames=4)
        saved[checkpointing] = bench.saved_bytes(model, bench.inputs(model, LATENT, 7, torch.float32))
    assert sum(saved[False]["blocks"]) > 4 * saved[False]["outside"] > 0
    assert sum(saved[True]["blocks"]) == saved[False]["block_inputs"] < sum(saved[False]["blocks"]) / 5
    assert saved[True]["outside"] == saved[False]["outside"]
    plain, checkpointed = bench.activation_bytes(saved[False]), bench.activation_bytes(saved[False], saved[True])
    assert checkpointed == plain - sum(saved[False]["blocks"]) + saved[False]["block_inputs"] + max(
        saved[False]["blocks"]) < plain / 2


def test_attention_memory_is_linear_in_tokens(bench):
    """A fused kernel keeps no T x T matrix: 4x the positions, at most 4x the saved bytes (a saved attention
    matrix would make it ~16x in the attention layers)."""
    model = bench.build("tiny", False, num_frames=2)
    small, large = (bench.activation_bytes(bench.saved_bytes(model, bench.inputs(model, (4, s, s), 7, torch.float32)))
                    for s in (8, 16))
    assert 3.5 < large / small <= 4.0


def test_checkpointing_costs_at_most_one_more_forward(bench):
    model, checkpointed = bench.build("tiny", False, num_frames=4), bench.build("tiny", True, num_frames=4)
    batch = bench.inputs(model, LATENT, 7, torch.float32)
    plain_flops, checkpointed_flops = bench.training_flops(model, batch), bench.training_flops(checkpointed, batch)
    assert plain_flops < checkpointed_flops <= plain_flops * 4 / 3 + 1  # backward ~ 2 forwards


def test_batch_arithmetic_and_section_rewrite(bench, tmp_path):
    gib = bench.GIB
    assert bench.max_batch(80, 10 * gib, gib) == 61  # 0.9 * 80 - 1 - 10 = 61 GiB for 1 GiB clips
    assert bench.max_batch(16, 20 * gib, gib) == 0
    counts = {"total": 100, "new": 10}
    assert bench.state_bytes(counts, False) == 2000 and bench.state_bytes(counts, True) == 920
    page = tmp_path / "efficiency.md"
    page.write_text("# Efficiency\n\nother sections\n")
    bench.write_section(page, f"{bench.BEGIN}\nfirst\n{bench.END}", bench.BEGIN, bench.END)
    bench.write_section(page, f"{bench.BEGIN}\nsecond\n{bench.END}", bench.BEGIN, bench.END)
    assert page.read_text() == f"# Efficiency\n\nother sections\n\n{bench.BEGIN}\nsecond\n{bench.END}\n"
