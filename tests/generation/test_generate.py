"""Generation: greedy parity with a plain argmax loop, the stopping rules, streaming, seeds, batching.

Token sequences are scripted through the S0 constraint hook (``ScriptConstraint`` allows exactly the
next scripted token), so stop strings can be placed across token boundaries on purpose.
"""

from __future__ import annotations

import pytest
import torch

from nemo_ref.demo import embedded_model
from nemo_ref.engine import Engine, Request
from nemo_ref.generate import encode_prompt, generate, make_sequences, stream
from nemo_ref.sampling.params import ParamError, SamplingParams
from nemo_ref.sequence import find_stop, held_back

V = 131072


class ScriptConstraint:
    """Allows exactly the next token of a fixed script (a test driver for the S0 hook)."""

    def __init__(self, script: list[int]):
        self.script, self.i = script, 0

    def allowed(self) -> torch.Tensor:
        mask = torch.zeros(V, dtype=torch.bool)
        mask[self.script[min(self.i, len(self.script) - 1)]] = True
        return mask

    def consume(self, token: int) -> None:
        assert token == self.script[self.i], (token, self.script[self.i])
        self.i += 1

    def is_done(self) -> bool:
        return self.i >= len(self.script)


def scripted(tok, text: str, eos: bool = True) -> list[int]:
    ids = tok.encode(text, bos=False)
    return [*ids, tok.eos_id] if eos else ids


def run_script(model, tok, script, **params):
    params.setdefault("seed", 0)
    p = SamplingParams(**params)
    return generate(model, tok, "x", p, constraint_factory=lambda: ScriptConstraint(script))


# ---- stop-string helpers ---------------------------------------------------------------------


def test_find_stop_earliest_start_wins():
    assert find_stop("hello world", ["world", "lo w"]) == 3
    assert find_stop("hello world", ["xyz"]) is None
    # Only matches that end after search_from are new.
    assert find_stop("abcabc", ["abc"], search_from=4) == 3


def test_held_back_is_longest_proper_prefix_suffix():
    assert held_back("hello wor", ["world"]) == 3
    assert held_back("hello w", ["world", "hello w!"]) == 7
    assert held_back("hello", ["world"]) == 0
    assert held_back("abc", ["abc"]) == 0  # a complete match is not a proper prefix


# ---- greedy parity ---------------------------------------------------------------------------


def test_greedy_equals_plain_argmax_loop(model, tok):
    prompt = tok.encode("The quick brown fox", bos=True)
    out = generate(model, tok, prompt, SamplingParams(temperature=0, max_tokens=12, seed=1))
    ids = list(prompt)
    model_nocache = embedded_model("nemo-tiny", seed=0)
    expected = []
    for _ in range(12):
        logits = model_nocache(torch.tensor([ids]))[0, -1]
        nxt = int(torch.argmax(logits))  # torch.argmax returns the first maximal index
        expected.append(nxt)
        ids.append(nxt)
        if nxt == tok.eos_id:
            break
    assert out.token_ids == expected
    assert out.usage.completion_tokens == len(expected)
    assert out.usage.prompt_tokens == len(prompt)


# ---- stopping rules --------------------------------------------------------------------------


def test_eos_stops_and_adds_no_text(model, tok):
    script = scripted(tok, "Hello world")
    out = run_script(model, tok, script, max_tokens=50)
    assert out.finish_reason == "stop"
    assert out.text == "Hello world"
    assert out.token_ids == script  # EOS is counted in the tokens and usage
    assert out.usage.completion_tokens == len(script)


def test_stop_string_across_token_boundary(model, tok):
    script = scripted(tok, "Hello world, and more")
    pieces = [tok.decode([t]) for t in script[:-1]]
    assert "lo wo" not in pieces  # the stop string straddles tokens
    out = run_script(model, tok, script, stop=["lo wo"], max_tokens=50)
    assert out.text == "Hel"
    assert out.finish_reason == "stop"
    # Every token up to the one completing the stop is counted.
    n = next(i for i in range(1, len(script)) if "lo wo" in tok.decode(script[:i]))
    assert out.usage.completion_tokens == n


def test_earliest_match_wins_over_list_order(model, tok):
    script = scripted(tok, "Hello world, and more")
    out = run_script(model, tok, script, stop=["world", "o w"], max_tokens=50)
    assert out.text == "Hell"


def test_stop_on_last_allowed_token_reports_stop(model, tok):
    script = scripted(tok, "Hello world, and more")
    n = next(i for i in range(1, len(script)) if "world" in tok.decode(script[:i]))
    out = run_script(model, tok, script, stop=["world"], max_tokens=n)
    assert out.finish_reason == "stop"
    assert out.usage.completion_tokens == n
    out = run_script(model, tok, script, stop=["world"], max_tokens=n - 1)
    assert out.finish_reason == "length"


def test_streaming_never_shows_a_stop_prefix(model, tok):
    script = scripted(tok, "Hello wonder world end")
    p = SamplingParams(seed=0, stop=["world"], max_tokens=50)
    deltas = list(stream(model, tok, "x", p, constraint_factory=lambda: ScriptConstraint(script)))
    final = "".join(d.text for d in deltas)
    assert final == "Hello wonder "
    shown = ""
    for d in deltas:
        shown += d.text
        assert final.startswith(shown)  # nothing shown is ever taken back
    assert deltas[-1].finish_reason == "stop"
    assert all(d.finish_reason is None for d in deltas[:-1])


def test_streaming_emoji_split_across_tokens_is_byte_exact(model, tok):
    text = "crab 🦀 and 日本語 done"
    script = scripted(tok, text)
    assert any("\ufffd" in tok.decode([t]) for t in script[:-1])  # some token is a partial char
    p = SamplingParams(seed=0, max_tokens=50)
    deltas = list(stream(model, tok, "x", p, constraint_factory=lambda: ScriptConstraint(script)))
    assert all("\ufffd" not in d.text for d in deltas)
    assert "".join(d.text for d in deltas) == text


def test_logprobs_carry_raw_bytes(model, tok):
    script = scripted(tok, "🦀")
    out = run_script(model, tok, script, max_tokens=10, logprobs=True, top_logprobs=3)
    entries = out.logprobs
    assert [e.token_id for e in entries] == script
    assert b"".join(bytes(e.bytes) for e in entries[:-1]) == "🦀".encode()
    for e in entries:
        # Constrained to one token: its raw logprob (after the S0 mask) is 0, and masked tokens
        # (logprob -inf) are never listed among the top entries.
        assert e.logprob == pytest.approx(0.0, abs=1e-9)
        assert [(t.token_id, t.logprob) for t in e.top_logprobs] == [(e.token_id, e.logprob)]


def test_top_logprobs_sorted_and_consistent(model, tok):
    p = SamplingParams(seed=3, max_tokens=4, logprobs=True, top_logprobs=5)
    out = generate(model, tok, "Hi", p)
    prompt = encode_prompt(tok, "Hi")
    fresh = embedded_model("nemo-tiny", seed=0)
    for step, e in enumerate(out.logprobs):
        ids = prompt + out.token_ids[:step]
        raw = torch.log_softmax(fresh(torch.tensor([ids]))[0, -1].double(), -1)
        assert e.logprob == pytest.approx(float(raw[e.token_id]), abs=1e-5)
        lps = [t.logprob for t in e.top_logprobs]
        assert len(lps) == 5 and lps == sorted(lps, reverse=True)
        best = torch.topk(raw, 5).indices.tolist()
        assert [t.token_id for t in e.top_logprobs] == best
        assert all(bytes(t.bytes) == tok.token_bytes(t.token_id) for t in e.top_logprobs)


# ---- seeds, choices, batching ----------------------------------------------------------------


def test_seed_is_drawn_reported_and_reproduces(model, tok):
    p = SamplingParams(temperature=1.0, max_tokens=8)
    a = generate(model, tok, "Hi", p)
    assert isinstance(a.seed, int)
    b = generate(model, tok, "Hi", SamplingParams(temperature=1.0, max_tokens=8, seed=a.seed))
    assert a.token_ids == b.token_ids


def test_n_choices_use_their_own_rng_index(model, tok):
    p = SamplingParams(temperature=1.5, max_tokens=8, seed=11, n=3)
    out = generate(model, tok, "Hi", p)
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert len({tuple(c.token_ids) for c in out.choices}) > 1
    single = generate(model, tok, "Hi", SamplingParams(temperature=1.5, max_tokens=8, seed=11))
    assert single.choices[0].token_ids == out.choices[0].token_ids
    assert out.usage.completion_tokens == sum(len(c.token_ids) for c in out.choices)


def test_seeded_request_is_batch_independent(model, tok):
    """Two requests decoded together (different prompt lengths) equal each one alone."""
    params = [
        SamplingParams(temperature=0.9, top_p=0.9, max_tokens=10, seed=5, repetition_penalty=1.2),
        SamplingParams(temperature=1.2, top_k=50, max_tokens=7, seed=6, presence_penalty=0.5),
    ]
    prompts = [encode_prompt(tok, "Hello there"), encode_prompt(tok, "A much longer prompt, indeed")]
    alone = [generate(model, tok, pr, p).token_ids for pr, p in zip(prompts, params, strict=True)]
    engine = Engine(model, max_batch=4, max_len=64)
    reqs = []
    for pr, p in zip(prompts, params, strict=True):
        _, seqs = make_sequences(tok, pr, p, 64)
        reqs.append(engine.submit(Request(seqs)))
    while not all(r.finished for r in reqs):
        engine.step()
    assert [r.sequences[0].output for r in reqs] == alone


def test_cancel_frees_the_slot(model, tok):
    engine = Engine(model, max_batch=2, max_len=64)
    _, seqs = make_sequences(tok, encode_prompt(tok, "Hi"), SamplingParams(max_tokens=40, seed=0), 64)
    req = engine.submit(Request(seqs))
    engine.step()
    assert engine.load == (1, 0)
    engine.cancel(req)
    engine.step()
    assert engine.load == (0, 0)
    assert req.finished


# ---- validation ------------------------------------------------------------------------------


def test_prompt_plus_max_tokens_over_context_is_an_error(model, tok):
    ctx = model.args.max_seq_len
    with pytest.raises(ParamError) as e:
        generate(model, tok, "Hi", SamplingParams(max_tokens=ctx))
    assert e.value.param == "max_tokens"
    with pytest.raises(ParamError) as e:
        generate(model, tok, "Hi", SamplingParams(max_completion_tokens=ctx, max_tokens=1))
    assert e.value.param == "max_completion_tokens"


def test_bad_prompts_are_errors(model, tok):
    for bad in ([], [V], [-1], 3.5, [True]):
        with pytest.raises(ParamError) as e:
            generate(model, tok, bad, SamplingParams(max_tokens=1))
        assert e.value.param == "prompt"


def test_logit_bias_ids_checked_against_vocab(model, tok):
    with pytest.raises(ParamError) as e:
        generate(model, tok, "Hi", SamplingParams(max_tokens=1, logit_bias={V: 1.0}))
    assert e.value.param == "logit_bias"


def test_public_names_are_the_functions():
    import nemo_ref
    import nemo_ref.server.jobs  # imports the nemo_ref.generate submodule

    assert callable(nemo_ref.generate) and callable(nemo_ref.stream)
    assert nemo_ref.generate is generate
    assert nemo_ref.SamplingParams is SamplingParams


class NothingAllowed(ScriptConstraint):
    """A constraint that leaves no token possible: sampling that row must fail."""

    def allowed(self) -> torch.Tensor:
        return torch.zeros(V, dtype=torch.bool)


class BrokenGrammar(ScriptConstraint):
    def allowed(self) -> torch.Tensor:
        raise RuntimeError("grammar exploded")


@pytest.mark.parametrize("bad_constraint", [NothingAllowed, BrokenGrammar])
def test_a_failing_request_fails_alone_and_the_engine_keeps_serving(model, tok, bad_constraint):
    from nemo_ref.sampling.reference import SamplingError

    engine = Engine(model, max_batch=4, max_len=64)
    engine.start()
    try:
        good_params = SamplingParams(max_tokens=6, seed=3)
        expected = generate(model, tok, "Hi", good_params).token_ids
        prompt = encode_prompt(tok, "Hi")
        _, bad_seqs = make_sequences(tok, prompt, good_params, 64, lambda: bad_constraint([5]))
        _, good_seqs = make_sequences(tok, prompt, good_params, 64)
        bad, good = engine.submit(Request(bad_seqs)), engine.submit(Request(good_seqs))
        assert bad.wait(30) and good.wait(30)
        expected_error = SamplingError if bad_constraint is NothingAllowed else RuntimeError
        assert isinstance(bad.error, expected_error)
        assert good.error is None and good.sequences[0].output == expected
        # The thread is still alive and serving.
        _, again = make_sequences(tok, prompt, good_params, 64)
        later = engine.submit(Request(again))
        assert later.wait(30) and later.sequences[0].output == expected
        assert engine.load == (0, 0)
    finally:
        engine.shutdown()


def test_several_stops_completed_by_one_token_earliest_start_wins(model, tok):
    script = scripted(tok, "Hello world, and more")
    assert tok.decode([script[1]]) == " world"  # one token completes both stops below
    out = run_script(model, tok, script, stop=["rld", "wor"], max_tokens=50)
    assert out.text == "Hello "
    assert out.usage.completion_tokens == 2


def test_sampler_defaults_to_torch_on_cpu(model):
    assert Engine(model, max_batch=1, max_len=8).sampler == "torch"
    assert Engine(model, max_batch=1, max_len=8, sampler="triton").sampler == "triton"
    with pytest.raises(ValueError, match="sampler"):
        Engine(model, max_batch=1, max_len=8, sampler="cuda")


def test_failed_prefill_fails_its_request_and_frees_its_slots(model, tok, monkeypatch):
    engine = Engine(model, max_batch=2, max_len=64)
    real_prefill = engine._prefill_chunk
    poisoned = encode_prompt(tok, "poison")

    def prefill(prompt, slot, start, end):
        if prompt == poisoned:
            raise RuntimeError("prefill exploded")
        return real_prefill(prompt, slot, start, end)

    monkeypatch.setattr(engine, "_prefill_chunk", prefill)
    params = SamplingParams(max_tokens=3, seed=0, n=2)
    _, bad_seqs = make_sequences(tok, poisoned, params, 64)
    _, good_seqs = make_sequences(tok, encode_prompt(tok, "Hi"), params, 64)
    bad, good = engine.submit(Request(bad_seqs)), engine.submit(Request(good_seqs))
    while not (bad.finished and good.finished):
        engine.step()
    assert isinstance(bad.error, RuntimeError)
    # Both rows came back: the good request (n=2) needed them and ran to completion.
    assert good.error is None and all(len(s.output) == 3 for s in good.sequences)
    assert engine.load == (0, 0) and engine._free == [0, 1]
