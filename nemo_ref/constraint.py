"""One choice's walk through a grammar: `Constraint`, over llguidance's `LLMatcher`.

The sampler's step S0 (docs/sampling.md) masks every token the grammar forbids; `Constraint`
gives that mask for the current state and advances with each sampled token. The grammars
themselves (lark text with `%json` embeds) come from nemo_ref/structured.py.

- Compiled grammars are cached: an LRU of pristine matchers keyed by the grammar text's SHA-256,
  bounded in entries and in bytes of grammar text (`BoundedLRU`); each Constraint deep-copies one.
  The llguidance tokenizer is built once per Tokenizer (0.5 s).
- Grammar failures are errors, never a normal-looking stop. A fresh grammar is probed when it is
  compiled (its first mask, a few first tokens, and every `%json` embed on its own), so that one
  llguidance compiles but cannot run (a schema that only refers to itself; one past the parser's
  limits) is a `GrammarError` before generation. Later, a matcher in error raises `GrammarError`
  before any mask is built from it (such a mask allows only EOS). Messages are one short line:
  llguidance's error text carries a dump of its state.

llguidance and mistral-common are imported lazily.
"""

from __future__ import annotations

import hashlib
import re
import threading
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

__all__ = ["BoundedLRU", "Constraint", "GrammarError", "digest"]

_ERROR_CHARS = 200  # llguidance errors are cut to this (their full text dumps parser state)
_PROBE_TOKENS = 8  # first tokens tried on a freshly compiled grammar (see _probe)
_EMBED_LINE = re.compile(r"^\w+: (%json .*)$", re.MULTILINE)


class GrammarError(ValueError):
    """A response_format / tools / tool_choice that cannot be turned into a grammar, or a grammar
    that fails (when probed, or during generation).

    `param` names the request field to blame ("response_format", "tools", "tool_choice",
    "parallel_tool_calls") when it is known; the server answers HTTP 400 with it.
    """

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def _llg():
    try:
        import llguidance
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "structured outputs and tools need llguidance: pip install 'nemo_ref[structured]'"
        ) from e
    return llguidance


def _first_line(err: str) -> str:
    """llguidance's error, short: its first line (the rest is a dump of the parser's state)."""
    line = err.strip().splitlines()[0] if err.strip() else "invalid"
    line = re.sub(r"^at \d+\(\d+\): ", "", line)
    return line if len(line) <= _ERROR_CHARS else line[: _ERROR_CHARS - 3] + "..."


_lock = threading.Lock()
_llg_tokenizers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class BoundedLRU:
    """A thread-safe LRU bounded by entry count and by the bytes its callers say each entry costs.

    Keys are digests (a client's 5 MB schema is never a key); ``size`` is the caller's measure of
    what an entry holds (the grammar text's length: a compiled matcher grows with it).
    """

    def __init__(self, max_entries: int, max_bytes: int):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Any, value: Any, size: int) -> None:
        if size > self.max_bytes:
            return  # never cached: it would evict everything else
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, size)
            self._bytes += size
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, freed) = self._items.popitem(last=False)
                self._bytes -= freed

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


_grammars = BoundedLRU(max_entries=64, max_bytes=32 * 2**20)  # pristine matchers


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _llg_tokenizer(tokenizer: Any) -> Any:
    """llguidance's view of a tokenizer, built once per Tokenizer (about 0.5 s)."""
    with _lock:
        lt = _llg_tokenizers.get(tokenizer)
        if lt is None:
            if getattr(tokenizer, "kind", "tekken") == "tekken":
                from mistral_common.guidance.tokenizer import from_mistral_tokenizer

                lt = from_mistral_tokenizer(tokenizer.mistral)
            else:  # mistral-common's adapter is Tekken-only; ours for SentencePiece
                llg = _llg()
                lt = llg.LLTokenizer(llg.TokenizerWrapper(tokenizer.llguidance_view()))
            _llg_tokenizers[tokenizer] = lt
        return lt


def _fill(matcher: Any, words: np.ndarray) -> None:
    """The next-token bitmask, or GrammarError: a matcher in error fills a mask that allows only
    EOS, which would end the output as if it were complete."""
    from llguidance.numpy import fill_next_token_bitmask

    if not matcher.is_error():
        fill_next_token_bitmask(matcher, words)
    if matcher.is_error():
        raise GrammarError(_failure(matcher.get_error()))


def _failure(err: str) -> str:
    reason = _first_line(err)
    if reason == "NoExtensionBias":  # llguidance: no token can ever extend the output
        return "the grammar admits no output (e.g. a schema that only refers to itself)"
    return f"the grammar cannot be enforced: {reason}"


def _probe(matcher: Any, n_vocab: int, eos: int) -> None:
    """Run a fresh matcher's first steps, so that a grammar llguidance compiles but cannot run
    fails now rather than in generation: one that admits no document at all (a schema that only
    refers to itself), one whose first tokens already exceed the parser's limits (hundreds of
    optional properties). The first mask, then up to _PROBE_TOKENS allowed tokens spread over
    the vocabulary, each consumed by a copy that must then still produce a mask."""
    words = np.zeros((1, (n_vocab + 31) // 32), dtype=np.int32)
    _fill(matcher, words)
    allowed = np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little")[:n_vocab])
    if allowed.size == 0 or (allowed.size == 1 and allowed[0] == eos and not matcher.is_accepting()):
        raise GrammarError("the grammar allows no output")
    for t in allowed[np.linspace(0, allowed.size - 1, min(_PROBE_TOKENS, allowed.size)).astype(int)]:
        if int(t) == eos:
            continue
        m = matcher.deep_copy()
        if not m.consume_token(int(t)):
            raise GrammarError(_failure(m.get_error()))
        _fill(m, words)


def _pristine_matcher(lt: Any, grammar: str, eos: int) -> Any:
    """A compiled, probed, unused matcher for (tokenizer, grammar); callers deep-copy it."""
    key = (id(lt), digest(grammar))
    m = _grammars.get(key)
    if m is not None:
        return m
    m = _llg().LLMatcher(lt, grammar, log_level=0)
    if m.is_error():
        raise GrammarError(f"the grammar does not compile: {_first_line(m.get_error())}")
    _probe(m, lt.vocab_size, eos)
    # A schema embedded deeper (a tool's arguments) is reached only after the tokens before it:
    # each is probed as a grammar of its own (our grammars put every %json embed on one line).
    for embed in _EMBED_LINE.findall(grammar):
        if f"start: {embed}\n" != grammar:
            _pristine_matcher(lt, f"start: {embed}\n", eos)
    _grammars.put(key, m, len(grammar))
    return m


class Constraint:
    """One choice's state in a grammar (wraps `llguidance.LLMatcher`).

    Per step: `allowed()` (bool [vocab_size], True = may be sampled), or `forced()` (the only
    allowed token, if exactly one), then `consume(token)` with the token actually sampled.
    EOS is allowed only when `is_accepting()`; once `is_done()` (the grammar can take nothing
    more), EOS is the only allowed token. Consuming EOS is allowed in an accepting state.
    A grammar that fails (at compile time, when probed, or later) raises `GrammarError`.

    Construction is cheap after the first use of a grammar text (compiled grammars are cached
    and deep-copied); the llguidance tokenizer is built once per Tokenizer.
    """

    def __init__(self, tokenizer: Any, grammar: str):
        if not isinstance(grammar, str) or not grammar.strip():
            raise GrammarError("empty grammar")
        self.tokenizer = tokenizer
        self.grammar = grammar
        self.vocab_size = int(tokenizer.vocab_size)
        lt = _llg_tokenizer(tokenizer)
        self._matcher = _pristine_matcher(lt, grammar, tokenizer.eos_id).deep_copy()
        self._words = np.zeros((1, (lt.vocab_size + 31) // 32), dtype=np.int32)
        self._allowed: np.ndarray | None = None  # cached mask for the current state

    def _mask(self) -> np.ndarray:
        if self._allowed is None:
            _fill(self._matcher, self._words)
            # bit b of int32 word w is token 32*w + b: little-endian bytes, little bit order.
            bits = np.unpackbits(self._words.view(np.uint8), bitorder="little")
            self._allowed = bits[: self.vocab_size].view(np.bool_)
        return self._allowed

    def allowed(self) -> torch.Tensor:
        """Bool tensor [vocab_size]: True for the tokens the grammar allows next (a new tensor)."""
        return torch.from_numpy(self._mask().copy())

    def mask_logits_(self, logits: torch.Tensor) -> torch.Tensor:
        """Set the logits of forbidden tokens to -inf, in place (last dim = vocab); returns them."""
        forbid = ~torch.from_numpy(self._mask()).to(logits.device)
        return logits.masked_fill_(forbid, float("-inf"))

    def forced(self) -> int | None:
        """The only allowed token if exactly one is allowed, else None."""
        nz = np.flatnonzero(self._mask())
        return int(nz[0]) if nz.size == 1 else None

    def consume(self, token_id: int) -> None:
        """Advance past the sampled token. A token the grammar forbids raises ValueError; a
        grammar that fails here raises GrammarError (a ValueError too)."""
        t = int(token_id)
        if self._allowed is not None and not (0 <= t < self.vocab_size and self._allowed[t]):
            raise ValueError(f"token {t} is not allowed by the grammar here")
        self._allowed = None
        if not self._matcher.consume_token(t):
            raise GrammarError(f"token {t} rejected by the grammar: {_first_line(self._matcher.get_error())}")

    def is_accepting(self) -> bool:
        """True when the output so far is complete (EOS may follow)."""
        return bool(self._matcher.is_accepting())

    def is_done(self) -> bool:
        """True when nothing more can follow (only EOS, or EOS was consumed)."""
        return bool(self._matcher.is_stopped())
