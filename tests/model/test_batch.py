"""Batch.build: every check on a forward call's arguments names the argument and its valid range.

Batch.build is called directly on tiny shapes (no model weights), and once through the model.
"""

from __future__ import annotations

import pytest
import torch

from nemo_ref.batch import Batch
from nemo_ref.config import ModelArgs
from nemo_ref.kv_cache import KVCache
from nemo_ref.rope import RopeTables

ARGS = ModelArgs(
    dim=64, n_layers=2, head_dim=32, hidden_dim=160, n_heads=4, n_kv_heads=2, vocab_size=300, max_seq_len=128
)


def build(tokens, start_pos=0, rows=None, cache=None) -> Batch:
    return Batch.build(tokens, start_pos, rows, cache, ARGS, RopeTables(ARGS), masked=True)


def cache(rows: int = 3, length: int = 16) -> KVCache:
    return KVCache.allocate(ARGS, rows, length, torch.float32, "cpu")


TOKENS = torch.zeros((2, 3), dtype=torch.long)  # batch 2, 3 tokens


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(tokens=torch.zeros(3, dtype=torch.long)), r"tokens must be \[batch, seq\], got shape \(3,\)"),
        (dict(start_pos=[0, 1, 2]), r"start_pos must be an int or one value per row \(2\), got \[0, 1, 2\]"),
        (
            dict(start_pos=torch.zeros(2, 1)),
            r"start_pos must be an int or one value per row \(2\), got shape",
        ),
        (dict(rows=1, cache=cache()), "rows must be a sequence or a tensor"),
        (dict(rows=[0], cache=cache()), "rows must name 2 cache rows, got 1"),
        (dict(rows=[1, 3], cache=cache()), r"the KV cache has rows 0\.\.2; this call uses \[1, 3\]"),
        (dict(rows=[-1, 0], cache=cache()), r"the KV cache has rows 0\.\.2; this call uses \[-1, 0\]"),
        (dict(start_pos=[0, -2], cache=cache()), r"positions must lie in \[0, 16\); this call starts at -2"),
        (dict(start_pos=[0, 14], cache=cache()), r"positions must lie in \[0, 16\); this call reaches 17"),
        (dict(start_pos=-1), r"positions must lie in \[0, 128\); this call starts at -1"),
        (dict(start_pos=126), r"positions must lie in \[0, 128\); this call reaches 129"),
    ],
)
def test_a_bad_call_names_the_argument_and_its_range(kwargs, message):
    call = {"tokens": TOKENS, **kwargs}
    with pytest.raises(ValueError, match=message):
        build(**call)


def test_the_model_reports_the_same_errors(make_model):
    model = make_model(ARGS, seed=0)
    with pytest.raises(ValueError, match=r"rows must name 2 cache rows, got 3"):
        model(TOKENS, 0, rows=[0, 1, 2], cache=model.new_cache(3, 16))
    with pytest.raises(ValueError, match=r"decode_step takes tokens \[3, 1\] and start \[3\]"):
        model.decode_step(TOKENS, torch.zeros(3, dtype=torch.long), model.new_cache(3, 16))


def test_a_valid_call_gives_each_token_its_position_and_row():
    b = build(TOKENS, [4, 2], rows=[1, 2], cache=cache())
    assert b.pos.tolist() == [[4, 5, 6], [2, 3, 4]]
    assert b.rows.tolist() == [1, 2] and b.row_run == slice(1, 3)
    assert b.kv_len == 7 and b.same_start is None and b.cached
    assert b.cos.shape == b.sin.shape == (2, 3, ARGS.head_dim // 2)
    assert build(TOKENS, 0, rows=[2, 0], cache=cache()).row_run is None  # not a run: indexed reads
