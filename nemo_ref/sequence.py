"""One choice being generated: its tokens, stopping rules, streamed text and logprobs.

The engine samples; a ``Sequence`` decides what a sampled token means (docs/sampling.md "Stopping and finish reasons"):
after each token, in this order,

1. EOS (``</s>``) -> finish "stop"; EOS adds no text;
2. stop strings, matched on the incrementally decoded completion (special tokens skipped): the match
   with the smallest start wins (tie: earlier in the list); the text is cut there -> "stop";
3. a tool call completed -> "tool_calls";
4. the token cap -> "length".

Streaming never shows text that may still turn out to be the start of a stop string: the longest
suffix of the text that is a proper prefix of some stop string is held back until it is resolved.

Both are found incrementally (``StopMatcher``: one Knuth-Morris-Pratt automaton per stop string),
so a token costs time in its own characters only, whatever the output's length or the stop
strings' (``find_stop`` and ``held_back`` are the plain definitions, kept as the reference).
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sampling.params import SamplingParams

TOOL_CALLS_ID = 9  # Tekken v3 control token [TOOL_CALLS]; SentencePiece v2+ has it at 5


def tool_calls_id(tokenizer: Any) -> int | None:
    """The tokenizer's `[TOOL_CALLS]` id (None when its format has no tool calls, e.g. v1)."""
    return getattr(tokenizer, "tool_calls_id", TOOL_CALLS_ID)


@dataclass
class TopLogprob:
    """A token, its logprob and its raw bytes (never U+FFFD-replaced)."""

    token_id: int
    token: str
    logprob: float
    bytes: list[int]


@dataclass
class TokenLogprob(TopLogprob):
    """One generated token's logprob entry (OpenAI's ``logprobs.content[i]``) with its alternatives."""

    top_logprobs: list[TopLogprob] = field(default_factory=list)


@dataclass
class Delta:
    """What one step added to one choice: new text, its tokens' logprobs, and maybe the finish."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None
    finish_reason: str | None = None


def find_stop(text: str, stops: Seq[str], search_from: int = 0) -> int | None:
    """Start of the earliest stop-string match in ``text`` (tie: earlier in ``stops``), or None.

    Only matches ending after ``search_from`` are new; callers pass the previous text length.
    """
    best: int | None = None
    for s in stops:
        i = text.find(s, max(0, search_from - len(s) + 1))
        if i >= 0 and (best is None or i < best):
            best = i
    return best


def held_back(text: str, stops: Seq[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
    longest = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:n]):
                longest = n
                break
    return longest


class StopMatcher:
    """Stop strings matched as text arrives: ``find_stop`` and ``held_back`` without rescanning.

    For each stop string s, the state is the length of the longest prefix of s that is a suffix of
    the text so far (Knuth-Morris-Pratt); a state equal to len(s) is a match. Each character moves
    each state in amortised O(1) steps (the failure table is built once, O(len(s))), so the cost
    per token does not grow with the output nor with the stop strings' length.
    """

    def __init__(self, stops: Seq[str]):
        self.stops = [s for s in stops if s]
        self._fail = [self._failure(s) for s in self.stops]
        self._state = [0] * len(self.stops)
        self._seen = 0  # characters fed so far

    @staticmethod
    def _failure(s: str) -> list[int]:
        """fail[i]: length of the longest proper prefix of s[: i + 1] that is also its suffix."""
        fail = [0] * len(s)
        k = 0
        for i in range(1, len(s)):
            while k and s[i] != s[k]:
                k = fail[k - 1]
            if s[i] == s[k]:
                k += 1
            fail[i] = k
        return fail

    def feed(self, chunk: str) -> int | None:
        """Advance past ``chunk`` (the text's next characters). Returns the start, in the whole
        text, of the earliest match that ends in ``chunk`` (tie: earlier stop string), or None."""
        best: int | None = None
        for j, (s, fail) in enumerate(zip(self.stops, self._fail, strict=True)):
            k, n = self._state[j], len(s)
            for i, c in enumerate(chunk):
                while k and c != s[k]:
                    k = fail[k - 1]
                if c == s[k]:
                    k += 1
                if k == n:
                    start = self._seen + i + 1 - n
                    if best is None or start < best:
                        best = start
                    k = fail[k - 1]
                    break
            self._state[j] = k
        self._seen += len(chunk)
        return best

    @property
    def held(self) -> int:
        """``held_back`` of the text fed so far: the longest suffix that is a proper prefix of a stop."""
        return max(self._state, default=0)


class Sequence:
    """The state of one choice of one request. Not thread-safe: owned by the engine's thread."""

    def __init__(
        self,
        *,
        index: int,
        prompt: list[int],
        params: SamplingParams,
        seed: int,
        max_new_tokens: int,
        tokenizer: Any,
        constraint: Any | None = None,
    ):
        from .tokenizer import IncrementalDecoder

        self.index = index
        self.prompt = prompt
        self.params = params
        self.seed = seed
        self.max_new_tokens = max_new_tokens
        self.tokenizer = tokenizer
        self.constraint = constraint
        self.tool_calls_id = tool_calls_id(tokenizer)
        self.output: list[int] = []
        self.finish_reason: str | None = None
        self.logprobs: list[TokenLogprob] = []
        self._decoder = IncrementalDecoder(tokenizer, skip_special=True)
        self._cut: int | None = None  # where a matched stop string starts
        self._emitted = 0  # characters of self.text already streamed
        self._unsent = ""  # self.text[self._emitted :]: what take_delta has not given out yet
        self._pending_lp: list[TokenLogprob] = []
        self._pending_ids: list[int] = []
        self._stops = StopMatcher(params.stop) if params.stop else None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def text(self) -> str:
        """The completion text so far (cut where a stop string starts, once one matched)."""
        text = self._decoder.text
        return text if self._cut is None else text[: self._cut]

    @property
    def step(self) -> int:
        """Index of the next token to generate: the RNG counter of docs/sampling.md."""
        return len(self.output)

    def allowed(self):
        """The S0 mask for the next token (bool [V]) or None when unconstrained."""
        return None if self.constraint is None else self.constraint.allowed()

    def append(self, token: int, logprob: float, top: list[tuple[int, float]]) -> None:
        """Record a sampled token and apply the stopping rules."""
        assert not self.done, "append() on a finished sequence"
        self.output.append(token)
        self._pending_ids.append(token)
        if self.params.logprobs:
            entry = self._entry(TokenLogprob, token, logprob)
            entry.top_logprobs = [self._entry(TopLogprob, t, lp) for t, lp in top]
            self.logprobs.append(entry)
            self._pending_lp.append(entry)
        if self.constraint is not None and token != self.tokenizer.eos_id:
            self.constraint.consume(token)

        if token == self.tokenizer.eos_id:
            self.finish_reason = "tool_calls" if self.tool_calls_id in self.output else "stop"
            self._finish_text()
            return
        if self._add_text(self._decoder.push(token)):
            return
        if self.constraint is not None and self.tool_calls_id in self.output and self.constraint.is_done():
            self.finish_reason = "tool_calls"
            self._finish_text()
        elif len(self.output) >= self.max_new_tokens:
            self.finish_reason = "length"
            self._finish_text()

    def _add_text(self, piece: str) -> bool:
        """Append decoded text; True when it completed a stop string (the text is cut there)."""
        self._unsent += piece
        cut = self._stops.feed(piece) if self._stops is not None and piece else None
        if cut is None:
            return False
        self._cut = cut
        self._unsent = self._unsent[: max(0, cut - self._emitted)]
        self.finish_reason = "stop"
        return True

    def _finish_text(self) -> None:
        """End of stream: emit bytes still held by the decoder (stop strings checked once more)."""
        self._add_text(self._decoder.flush())

    def _entry(self, kind: type[TopLogprob], token: int, logprob: float) -> Any:
        raw = self.tokenizer.token_bytes(token)
        return kind(token, self.tokenizer.token_str(token), logprob, list(raw))

    def take_delta(self) -> Delta | None:
        """Text and logprobs produced since the last call (stop-prefix hold-back applied)."""
        held = 0 if self.done or self._stops is None else self._stops.held
        n = max(0, len(self._unsent) - held)  # characters to give out now
        if n == 0 and not self._pending_ids and not self.done:
            return None
        delta = Delta(
            index=self.index,
            text=self._unsent[:n],
            token_ids=self._pending_ids,
            logprobs=self._pending_lp if self.params.logprobs else None,
            finish_reason=self.finish_reason,
        )
        self._unsent = self._unsent[n:]
        self._emitted += n
        self._pending_ids, self._pending_lp = [], []
        return delta
