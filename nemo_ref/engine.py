"""Continuous batching: every sequence in flight is decoded together, one token per step.

The KV cache has ``max_batch`` rows ("slots"). A request's choices take free slots when they arrive
(first come, first served), then join the decode steps; a finished or cancelled sequence frees its
slot at once, and a cancelled request still waiting leaves the queue at once. Each row keeps its
own position, sampling parameters, seed, constraint and stop strings; the counter-based RNG makes
a seeded choice produce the same tokens whatever else shares the batch.

Chunked prefill: a prompt is prefilled ``prefill_chunk`` tokens at a time, and every engine step
runs at most about that many prompt tokens before its decode step, so a running stream waits at
most one chunk's forward pass between two tokens however many long prompts arrive. A chunk always
starts at a multiple of ``prefill_chunk`` in its prompt: the logits do not depend on what else was
being prefilled (seeded requests reproduce whatever shares the engine).

``generate()`` and ``stream()`` drive an engine synchronously; the server runs one in a thread.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .backends import default_sampler
from .sampling.metadata import SampleRow
from .sampling.sampler import SamplerBackend, make_sampler
from .sequence import Delta, Sequence

PREFILL_CHUNK = 512  # prompt tokens per engine step: bounds a running stream's inter-token gap


class QueueFull(RuntimeError):
    """``submit(max_waiting=...)`` found that many requests already waiting for rows."""


@dataclass(eq=False)
class Request:
    """Choices to generate for one prompt. ``on_delta`` receives every Delta (engine's thread)."""

    sequences: list[Sequence]
    on_delta: Callable[[Delta], None] | None = None
    cancelled: bool = False
    error: BaseException | None = None
    _done: threading.Event = field(default_factory=threading.Event)

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)


@dataclass(eq=False)
class _Prefill:
    """A request holding rows while its prompt is prefilled into the first of them."""

    req: Request
    slots: list[int]
    done: int = 0  # prompt positions already in the cache


class Engine:
    """Owns a KV cache (its own: engines can share a model) and schedules sequences onto its rows."""

    def __init__(
        self,
        model: Any,
        *,
        max_batch: int = 8,
        max_len: int | None = None,
        sampler: str | SamplerBackend | None = None,
        cuda_graph: bool = False,
        prefill_chunk: int = PREFILL_CHUNK,
    ):
        self.device = model.tok_embeddings.weight.device
        # The sampler is chosen once, here: "torch", "triton" or a callable with the same call
        # (logits [B, V], SampleRows) -> SampleResults, e.g. the server's emulation of another
        # engine (server/semantics.py). `sampler` keeps the choice; `_sampler` is the call.
        self.sampler = default_sampler(self.device) if sampler is None else sampler
        self._sampler = make_sampler(self.sampler)
        self.model = model
        self.max_len = max_len or model.args.max_seq_len
        self.cache = model.new_cache(max_batch, self.max_len)  # the engine's own: engines can share a model
        # A decode step of every row captured in a CUDA graph (model.GraphedDecode), built now,
        # while no row holds a sequence. Off the GPU it is the same capturable step, uncaptured.
        self._graph = None
        if cuda_graph:
            from .model import GraphedDecode

            self._graph = GraphedDecode(model, self.cache)
        self._free = list(range(max_batch))
        self._waiting: collections.deque[Request] = collections.deque()
        self._running: dict[int, tuple[Sequence, Request]] = {}  # slot -> sequence
        self._last: dict[int, int] = {}  # slot -> token to feed at the next step
        self._admitted: list[Request] = []  # requests holding slots, until all their choices end
        self._prefilling: collections.deque[_Prefill] = collections.deque()  # admitted, prompt not done
        if prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be >= 1, got {prefill_chunk}")
        self.prefill_chunk = prefill_chunk
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stop = False

    @property
    def max_batch(self) -> int:
        return self.cache.max_batch

    # ---- public, thread-safe ----------------------------------------------------------------

    def submit(self, request: Request, max_waiting: int | None = None) -> Request:
        """Queue ``request`` for rows. ``max_waiting``: refuse it (QueueFull) when that many
        requests already wait, so that a burst is told to come back instead of timing out."""
        n = len(request.sequences)
        if n > self.max_batch:
            raise ValueError(f"n={n} choices exceed the engine's {self.max_batch} batch rows")
        for s in request.sequences:
            if len(s.prompt) + s.max_new_tokens > self.max_len:
                raise ValueError(
                    f"prompt ({len(s.prompt)}) + max_tokens ({s.max_new_tokens}) exceeds the "
                    f"engine's context of {self.max_len} tokens"
                )
        with self._wakeup:
            if max_waiting is not None and len(self._waiting) >= max_waiting:
                raise QueueFull(
                    f"the server is busy: {len(self._waiting)} requests are already waiting for "
                    f"{self.max_batch} rows; retry shortly"
                )
            self._waiting.append(request)
            self._wakeup.notify()
        return request

    def cancel(self, request: Request) -> None:
        """Stop generating ``request``; its slots are freed before the next step. A request still
        waiting leaves the queue at once (it must not hold back the requests behind it)."""
        with self._wakeup:
            request.cancelled = True
            if request in self._waiting:
                self._waiting.remove(request)
                request._done.set()
            self._wakeup.notify()

    def start(self) -> None:
        """Run the engine in a background thread (the server's mode)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="nemo-ref-engine", daemon=True)
            self._thread.start()

    def shutdown(self) -> None:
        with self._wakeup:
            self._stop = True
            self._wakeup.notify()
        if self._thread is not None:
            self._thread.join()

    @property
    def load(self) -> tuple[int, int]:
        """(sequences holding rows, requests waiting): prefilling sequences count as running."""
        with self._lock:
            prefilling = sum(len(p.slots) for p in self._prefilling)
            return len(self._running) + prefilling, len(self._waiting)

    # ---- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wakeup:
                while not self._stop and not self._waiting and not self._running and not self._prefilling:
                    self._wakeup.wait()
                if self._stop:
                    return
            try:
                self.step()
            except Exception as e:  # last resort: fail what is in flight, keep the thread alive
                self._fail_running(e)

    def step(self) -> bool:
        """Admit waiting requests, run one decode step, sample, deliver deltas. False if idle."""
        self._drop_cancelled()
        self._compact()
        logits_by_slot: dict[int, torch.Tensor] = {}
        self._admit()
        self._prefill_step(logits_by_slot)
        # Rows 0..n-1 after compaction (new arrivals sit after them and were sampled from their
        # prefill): the model reads the cache as a view. Positions and rows go as host ints, so
        # the forward never reads a tensor back.
        decode_slots = sorted(s for s in self._running if s in self._last)
        if decode_slots:
            tokens = torch.tensor([[self._last[s]] for s in decode_slots], device=self.device)
            start = [self._written(s) for s in decode_slots]
            try:
                if self._graph is not None:
                    logits = self._graph_step(decode_slots)
                else:
                    logits = self.model(tokens, start, rows=decode_slots, cache=self.cache)[:, -1]
            except Exception as e:  # not attributable to one row: fail the batch, keep serving
                self._fail_running(e)
                return True
            for i, s in enumerate(decode_slots):
                logits_by_slot[s] = logits[i]
        if not logits_by_slot:
            return bool(self._running or self._prefilling)
        self._sample(logits_by_slot)
        return True

    # ---- scheduling: admission, chunked prefill -------------------------------------------------

    def _admit(self) -> None:
        """Give free rows to waiting requests, in arrival order (the prompt is prefilled later)."""
        with self._lock:
            while self._waiting and len(self._waiting[0].sequences) <= len(self._free):
                req = self._waiting.popleft()
                slots = [self._free.pop(0) for _ in req.sequences]
                self._admitted.append(req)
                self._prefilling.append(_Prefill(req, slots))

    def _prefill_step(self, logits_by_slot: dict[int, torch.Tensor]) -> None:
        """Prefill up to ``prefill_chunk`` prompt tokens (at least one chunk), oldest request first;
        a request whose prompt is done joins the running rows with its last logits."""
        budget = self.prefill_chunk
        while self._prefilling:
            p = self._prefilling[0]
            prompt = p.req.sequences[0].prompt
            end = min(len(prompt), (p.done // self.prefill_chunk + 1) * self.prefill_chunk)
            if end - p.done > budget:  # never true for the first chunk of a step
                return
            budget -= end - p.done
            try:
                logits = self._prefill_chunk(prompt, p.slots[0], p.done, end)
            except Exception as e:  # a failed prefill fails only its own request
                self._prefilling.popleft()
                self._fail(p.req, e)
                self._clear_rows(p.slots[0], end)  # what the prefill wrote
                for slot in p.slots:
                    self._release(slot)
                self._finish_request(p.req)
                continue
            p.done = end
            if end < len(prompt):
                continue
            self._prefilling.popleft()
            self._start_decoding(p, logits, logits_by_slot)

    def _start_decoding(self, p: _Prefill, last_logits: torch.Tensor, logits_by_slot: dict) -> None:
        """The prompt was prefilled once: copy its keys/values to the other choices' rows."""
        n = len(p.req.sequences[0].prompt)
        with self._lock:
            for slot, seq in zip(p.slots, p.req.sequences, strict=True):
                if slot != p.slots[0]:
                    self.cache.copy_prefix(p.slots[0], slot, n)  # (a TP driver mirrors it)
                self._running[slot] = (seq, p.req)
                logits_by_slot[slot] = last_logits

    def _prefill_chunk(self, prompt: list[int], slot: int, start: int, end: int) -> torch.Tensor:
        """Prompt positions [start, end) into ``slot``'s cache rows; the last position's logits."""
        ids = torch.tensor([prompt[start:end]], device=self.device)
        logits = self.model(ids, start, rows=[slot], last_only=True, cache=self.cache)
        return logits[0, -1]

    def _sample(self, logits_by_slot: dict[int, torch.Tensor]) -> None:
        slots, rows = [], []
        for s in logits_by_slot:
            seq, req = self._running[s]
            try:
                allowed = seq.allowed()
            except Exception as e:  # a grammar error fails this request only
                self._fail(req, e)
                continue
            slots.append(s)
            rows.append(SampleRow(seq.params, seq.seed, seq.index, seq.step, seq.prompt, seq.output, allowed))
        if not slots:
            self._retire()
            return
        logits = torch.stack([logits_by_slot[s] for s in slots])
        try:
            results: list = self._sampler(logits, rows)
        except Exception:
            # Find the culprit(s), e.g. a row left with no possible token: sample row by row, so
            # that only the requests whose own rows fail are failed.
            results = []
            for i, row in enumerate(rows):
                try:
                    results.append(self._sampler(logits[i : i + 1], [row])[0])
                except Exception as e:
                    results.append(e)
        for s, r in zip(slots, results, strict=True):
            seq, req = self._running[s]
            if req.cancelled:  # an earlier row of the same request failed
                continue
            try:
                if isinstance(r, Exception):
                    raise r
                seq.append(r.token, r.logprob, r.top)
            except Exception as e:  # e.g. a grammar error: fail this request, keep serving
                self._fail(req, e)
                continue
            self._last[s] = r.token
            delta = seq.take_delta()
            if delta is not None and req.on_delta is not None:
                req.on_delta(delta)
            if seq.done:
                self._release(s)
        self._retire()

    def _retire(self) -> None:
        """Free the slots of cancelled requests; finish requests whose choices have all ended."""
        self._drop_cancelled()
        for req in list(self._admitted):
            if all(seq.done for seq in req.sequences):
                self._finish_request(req)

    @staticmethod
    def _fail(req: Request, error: BaseException) -> None:
        if req.error is None:
            req.error = error
        req.cancelled = True

    def _fail_running(self, error: BaseException) -> None:
        for _, req in list(self._running.values()):
            self._fail(req, error)
        self._drop_cancelled()

    def _drop_cancelled(self) -> None:
        for p in [p for p in self._prefilling if p.req.cancelled]:
            self._prefilling.remove(p)
            for slot in p.slots:
                self._release(slot)
        for slot, (_, req) in list(self._running.items()):
            if req.cancelled:
                self._release(slot)
        for req in list(self._admitted):
            if req.cancelled:
                self._finish_request(req)

    def _graph_step(self, decode_slots: list[int]) -> torch.Tensor:
        """The captured step runs every row: idle rows get token 0 at a position nobody reads
        (a free row's position 0; a just-admitted row's next position, rewritten next step)."""
        N = self.max_batch
        tokens, start = [0] * N, [0] * N
        for s in self._running:
            start[s] = self._written(s) + (s not in self._last)
        for s in decode_slots:
            tokens[s] = self._last[s]
        logits = self._graph(
            torch.tensor(tokens, device=self.device)[:, None], torch.tensor(start, device=self.device)
        )
        return logits[decode_slots]

    def _written(self, slot: int) -> int:
        """Positions of ``slot``'s row that hold its sequence's keys (all but the pending token)."""
        seq = self._running[slot][0]
        return len(seq.prompt) + len(seq.output) - 1

    def _clear_rows(self, slot: int, n: int) -> None:
        """Zero positions 0..n-1 of a row: the torch attention paths read (masked) positions past a
        shorter row's length, and ``0 * NaN`` is NaN, so a row a sequence leaves must not keep
        whatever it wrote (a NaN from an overflow would poison the next occupant's batch)."""
        self.cache.clear_prefix(slot, min(n, self.cache.max_len))

    def _release(self, slot: int) -> None:
        entry = self._running.get(slot)
        if entry is not None:
            self._clear_rows(slot, len(entry[0].prompt) + len(entry[0].output))
        with self._lock:
            self._running.pop(slot, None)
            self._last.pop(slot, None)
            self._free.append(slot)
            self._free.sort()

    def _compact(self) -> None:
        """Keep the running sequences in rows 0..n-1: move the highest into the lowest free row.

        One copy of a sequence's keys/values when a row below it frees (once per finished
        sequence), instead of a gathered copy of every live row in every layer at every step.
        """
        while self._running and self._free and self._free[0] < max(self._running):
            src, dst = max(self._running), self._free[0]
            n = min(len(self._running[src][0].prompt) + len(self._running[src][0].output), self.cache.max_len)
            self.cache.copy_prefix(src, dst, n)
            self._clear_rows(src, n)
            with self._lock:
                self._running[dst] = self._running.pop(src)
                if src in self._last:
                    self._last[dst] = self._last.pop(src)
                self._free.pop(0)
                self._free.append(src)
                self._free.sort()

    def _finish_request(self, req: Request) -> None:
        if req in self._admitted:
            self._admitted.remove(req)
        req._done.set()
