"""The engine's KV-cache rows: live sequences kept in rows 0..n-1 (so the model reads the cache as
a view, never a gathered copy), released rows cleared (a NaN a finished sequence left behind must
not reach the next occupant's batch), and the same tokens whatever the rows' history."""

from __future__ import annotations

import torch

import nemo_ref.model as M
from nemo_ref.engine import Engine, Request
from nemo_ref.generate import make_sequences
from nemo_ref.sampling.params import SamplingParams


def prompt(n: int, seed: int) -> list[int]:
    return torch.randint(1000, 5000, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def submit(engine: Engine, tok, ids: list[int], max_tokens: int) -> Request:
    _, seqs = make_sequences(
        tok, ids, SamplingParams(temperature=0, max_tokens=max_tokens, seed=0), engine.max_len
    )
    return engine.submit(Request(seqs))


def alone(model, tok, ids: list[int], max_tokens: int) -> list[int]:
    engine = Engine(model, max_batch=1, max_len=64)
    req = submit(engine, tok, ids, max_tokens)
    while not req.finished:
        engine.step()
    return req.sequences[0].output


def test_live_rows_stay_contiguous_and_are_read_as_views(model, tok, monkeypatch):
    # Three requests; the first (row 0) ends early: the last one moves into its row, so every
    # decode step's rows are 0..n-1 and attention reads views of the cache.
    runs = []
    read = M._read_cache

    def spy(cache, p):
        if p.pos.shape[1] == 1:  # a decode step: rows 0..n-1, read as a view
            runs.append(p.row_run is not None and p.row_run.start == 0)
        return read(cache, p)

    monkeypatch.setattr(M, "_read_cache", spy)
    engine = Engine(model, max_batch=4, max_len=64)
    specs = [(prompt(6, 1), 2), (prompt(9, 2), 6), (prompt(4, 3), 5)]
    reqs = [submit(engine, tok, ids, n) for ids, n in specs]
    moved = False
    while not all(r.finished for r in reqs):
        engine.step()
        moved |= reqs[0].finished and reqs[2].sequences[0] is engine._running.get(0, (None,))[0]
    assert moved, "the last request was not compacted into the freed row"
    assert runs and all(runs)
    monkeypatch.setattr(M, "_read_cache", read)
    # The moved sequence continues exactly as it would have alone.
    assert reqs[2].sequences[0].output == alone(model, tok, *specs[2])


def test_a_nan_left_in_a_reused_row_does_not_poison_a_shorter_sequence(model, tok):
    # A long request's keys turn NaN (as after an fp16 overflow): it fails. Its row is then
    # reused by a short request decoded beside a long one; the torch attention path reads the
    # short row's positions up to the long row's length (masked), where the NaN used to be.
    engine = Engine(model, max_batch=2, max_len=64)
    doomed = submit(engine, tok, prompt(30, 4), 5)
    engine.step()  # prefill + first token
    assert engine._running[0][1] is doomed
    for k, v in zip(engine.cache.k, engine.cache.v, strict=True):
        k[0, :, 20:30] = float("nan")
        v[0, :, 20:30] = float("nan")
    while not doomed.finished:
        engine.step()
    assert doomed.error is not None  # NaN logits: a SamplingError
    short, long_ = prompt(5, 5), prompt(30, 6)
    reqs = [submit(engine, tok, short, 6), submit(engine, tok, long_, 6)]
    while not all(r.finished for r in reqs):
        engine.step()
    assert [r.error for r in reqs] == [None, None]
    assert reqs[0].sequences[0].output == alone(model, tok, short, 6)


def test_the_capturable_step_in_the_engine_gives_the_same_tokens(model, tok):
    # cuda_graph=True on a CPU runs the same capturable decode_step uncaptured: every row, fixed
    # shapes, positions on the device. Same greedy tokens as the ordinary path.
    # A third request arrives while the others decode: its prefilled row must not be disturbed by
    # the step that runs every row.
    specs = [(prompt(6, 7), 5), (prompt(11, 8), 7), (prompt(3, 9), 4)]
    outs = []
    for graph in (False, True):
        engine = Engine(model, max_batch=3, max_len=32, cuda_graph=graph)
        reqs = [submit(engine, tok, ids, n) for ids, n in specs[:2]]
        engine.step()
        engine.step()
        reqs.append(submit(engine, tok, *specs[2]))
        while not all(r.finished for r in reqs):
            engine.step()
        outs.append([r.sequences[0].output for r in reqs])
    assert outs[0] == outs[1]
    assert outs[1][2] == alone(model, tok, *specs[2])
