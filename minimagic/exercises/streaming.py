"""Exercise of notebook 11 (streaming, docs/paper.md §10): the directed mask M of one streaming step.

With P finished frames in the KV cache and F new frames, the new frames' queries meet P + F keys: new frame p
is frame P + p of the clip, so M (F, P + F) allows key q exactly when q <= P + p. `streaming_mask` below is the
reference solution; `check_streaming_mask(student)` grades a student's `streaming_mask(num_cached, num_new)`,
prints one line (`passed`, `not attempted yet`, or the first thing wrong) and returns True or False.
"""

from collections.abc import Callable

import torch

from minimagic.temporal_attention import DirectedTemporalAttention, TemporalKVCache

TRIALS = [(0, 3), (2, 1), (3, 4), (5, 2)]  # (num_cached P, num_new F)


def streaming_mask(num_cached: int, num_new: int) -> torch.Tensor:
    """Reference solution: M (F, P + F) bool, True where new frame p may attend to key frame q <= P + p."""
    return torch.ones(num_new, num_cached + num_new, dtype=torch.bool).tril(num_cached)


FAULTS = [  # plausible wrong answers and what each gets wrong
    ("the diagonal is not shifted by the cache: new frame p must see all P cached frames and new frames <= p "
     "(PyTorch's is_causal=True makes this mistake when there are more keys than queries)",
     lambda P, F: torch.ones(F, P + F, dtype=torch.bool).tril()),
    ("new frames see later new frames: that is bidirectional attention",
     lambda P, F: torch.ones(F, P + F, dtype=torch.bool)),
    ("new frames do not see the cache: a key is allowed when q <= P + p, cached frames included",
     lambda P, F: torch.cat([torch.zeros(F, P, dtype=torch.bool), torch.ones(F, F, dtype=torch.bool).tril()], 1)),
]


def _attention_matches(mask: torch.Tensor, num_cached: int, num_new: int) -> bool:
    """Attention over all P + F keys with this mask gives what the package computes for the new frames from
    its KV cache (DirectedTemporalAttention with a TemporalKVCache holding the P cached frames)."""
    torch.manual_seed(0)
    layer = DirectedTemporalAttention(8, 2, num_cached + num_new).eval()
    torch.nn.init.normal_(layer.to_out.weight)  # zero at init: randomised so the check means something
    z = torch.randn(1, num_cached + num_new, 8, 2, 2)  # (B, P+F, C, H, W)
    with torch.no_grad():
        cache = TemporalKVCache(extend=True)
        if num_cached:
            layer(z[:, :num_cached], cache)  # writes the K, V of the cached frames
            cache.num_frames, cache.extend = num_cached, False
        expected = layer(z[:, num_cached:], cache)  # (B, F, C, H, W) from the cache
        q, k, v = layer._qkv(z)  # ((B*H*W), heads, P+F, d)
        out = torch.nn.functional.scaled_dot_product_attention(q[:, :, num_cached:], k, v, attn_mask=mask)
        got = layer._project(out, z[:, num_cached:])
    return torch.allclose(got, expected, atol=1e-5)


def check_streaming_mask(student: Callable[[int, int], torch.Tensor]) -> bool:
    """Grade `student(num_cached, num_new)` against `streaming_mask` on several cache sizes."""
    for num_cached, num_new in TRIALS:
        try:
            got = student(num_cached, num_new)
        except NotImplementedError:
            print("streaming_mask: not attempted yet")
            return False
        expected = streaming_mask(num_cached, num_new)
        if not torch.is_tensor(got) or got.shape != expected.shape:
            shape = tuple(got.shape) if torch.is_tensor(got) else type(got).__name__
            print(f"streaming_mask({num_cached}, {num_new}): got {shape}, expected a ({num_new}, "
                  f"{num_cached + num_new}) tensor: one row per new frame, one column per cached or new frame")
            return False
        if not torch.equal(got.bool(), expected):
            message = next((text for text, wrong in FAULTS if torch.equal(got.bool(), wrong(num_cached, num_new))),
                           None)
            if message is None:
                p, q = (got.bool() != expected).nonzero()[0].tolist()
                message = f"new frame {p} (frame {num_cached + p}) and key frame {q}: expected {bool(expected[p, q])}"
            print(f"streaming_mask({num_cached}, {num_new}): {message}")
            return False
        if not _attention_matches(got.bool(), num_cached, num_new):
            print(f"streaming_mask({num_cached}, {num_new}): attention with this mask differs from the package's")
            return False
    print("streaming_mask: passed")
    return True
