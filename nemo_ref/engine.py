"""Continuous batching: every sequence in flight is decoded together, one token per step.

The KV cache has ``max_batch`` rows ("slots"). A request's choices take free slots when they arrive
(prefill, chunked), then join the next decode step; a finished or cancelled sequence frees its slot
at once. Each row keeps its own position, sampling parameters, seed, constraint and stop strings;
the counter-based RNG makes a seeded choice produce the same tokens whatever else shares the batch.

``generate()`` and ``stream()`` drive an engine synchronously; the server runs one in a thread.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .sequence import Delta, Sequence

PREFILL_CHUNK = 1024  # bounds the attention mask and activations of a long prompt


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


class Engine:
    """Owns the model's KV cache and schedules sequences onto its rows."""

    def __init__(
        self,
        model: Any,
        *,
        max_batch: int = 8,
        max_len: int | None = None,
        sampler: str | Callable[[torch.Tensor, list], list] | None = None,
    ):
        self.device = model.tok_embeddings.weight.device
        if sampler is None:  # the fused Triton sampler on a GPU, the torch one elsewhere
            sampler = "triton" if self.device.type == "cuda" else "torch"
        # A callable is a sampler backend with sample_batch's signature (logits [B, V], SampleRows)
        # -> SampleResults, e.g. the server's emulation of another engine (server/semantics.py).
        if not callable(sampler) and sampler not in ("torch", "triton"):
            raise ValueError(f"sampler must be 'torch', 'triton' or a callable, got {sampler!r}")
        self.model = model
        self.max_len = max_len or model.args.max_seq_len
        self.cache = model.new_cache(max_batch, self.max_len)  # the engine's own: engines can share a model
        self.sampler = sampler
        self._free = list(range(max_batch))
        self._waiting: collections.deque[Request] = collections.deque()
        self._running: dict[int, tuple[Sequence, Request]] = {}  # slot -> sequence
        self._last: dict[int, int] = {}  # slot -> token to feed at the next step
        self._admitted: list[Request] = []  # requests holding slots, until all their choices end
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stop = False

    @property
    def max_batch(self) -> int:
        return self.cache.max_batch

    # ---- public, thread-safe ----------------------------------------------------------------

    def submit(self, request: Request) -> Request:
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
            self._waiting.append(request)
            self._wakeup.notify()
        return request

    def cancel(self, request: Request) -> None:
        """Stop generating ``request``; its slots are freed before the next step."""
        with self._wakeup:
            request.cancelled = True
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
        """(sequences running, requests waiting)."""
        with self._lock:
            return len(self._running), len(self._waiting)

    # ---- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wakeup:
                while not self._stop and not self._waiting and not self._running:
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
        logits_by_slot: dict[int, torch.Tensor] = {}
        self._admit(logits_by_slot)
        decode_slots = [s for s in self._running if s in self._last]
        if decode_slots:
            tokens = torch.tensor([[self._last[s]] for s in decode_slots], device=self.device)
            start = torch.tensor(
                [len(self._running[s][0].prompt) + len(self._running[s][0].output) - 1 for s in decode_slots],
                device=self.device,
            )
            rows = torch.tensor(decode_slots, device=self.device)
            try:
                logits = self.model(tokens, start, rows=rows, cache=self.cache)[:, -1]
            except Exception as e:  # not attributable to one row: fail the batch, keep serving
                self._fail_running(e)
                return True
            for i, s in enumerate(decode_slots):
                logits_by_slot[s] = logits[i]
        if not logits_by_slot:
            return bool(self._running)
        self._sample(logits_by_slot)
        return True

    def _admit(self, logits_by_slot: dict[int, torch.Tensor]) -> None:
        while True:
            with self._lock:
                if not self._waiting or len(self._waiting[0].sequences) > len(self._free):
                    return
                req = self._waiting.popleft()
                if req.cancelled:
                    self._finish_request(req)
                    continue
                slots = [self._free.pop(0) for _ in req.sequences]
                self._admitted.append(req)
            # Prefill the prompt once, then copy its keys/values to the other choices' rows.
            try:
                last_logits = self._prefill(req.sequences[0].prompt, slots[0])
            except Exception as e:  # a failed prefill fails only its own request
                self._fail(req, e)
                for slot in slots:
                    self._release(slot)
                self._finish_request(req)
                continue
            n = len(req.sequences[0].prompt)
            for slot, seq in zip(slots, req.sequences, strict=True):
                if slot != slots[0]:
                    for k, v in zip(self.cache.k, self.cache.v, strict=True):
                        k[slot, :, :n] = k[slots[0], :, :n]
                        v[slot, :, :n] = v[slots[0], :, :n]
                self._running[slot] = (seq, req)
                logits_by_slot[slot] = last_logits

    def _prefill(self, prompt: list[int], slot: int) -> torch.Tensor:
        ids = torch.tensor([prompt], device=self.device)
        rows = torch.tensor([slot], device=self.device)
        for start in range(0, len(prompt), PREFILL_CHUNK):
            chunk = ids[:, start : start + PREFILL_CHUNK]
            logits = self.model(chunk, start, rows=rows, last_only=True, cache=self.cache)
        return logits[0, -1]

    def _sample(self, logits_by_slot: dict[int, torch.Tensor]) -> None:
        from .sampling.batched import SampleRow, sample_batch

        if callable(self.sampler):
            sample_fn = self.sampler
        elif self.sampler == "triton":
            from .kernels.sampling import sample_rows as sample_fn
        else:
            sample_fn = sample_batch
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
            results: list = sample_fn(logits, rows)
        except Exception:
            # Find the culprit(s), e.g. a row left with no possible token: sample row by row, so
            # that only the requests whose own rows fail are failed.
            results = []
            for i, row in enumerate(rows):
                try:
                    results.append(sample_fn(logits[i : i + 1], [row])[0])
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
        for slot, (_, req) in list(self._running.items()):
            if req.cancelled:
                self._release(slot)
        for req in list(self._admitted):
            if req.cancelled:
                self._finish_request(req)

    def _release(self, slot: int) -> None:
        with self._lock:
            self._running.pop(slot, None)
            self._last.pop(slot, None)
            self._free.append(slot)
            self._free.sort()

    def _finish_request(self, req: Request) -> None:
        if req in self._admitted:
            self._admitted.remove(req)
        req._done.set()
