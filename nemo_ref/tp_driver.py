"""Driving a tensor-parallel model from rank 0: every call is broadcast, then run on every rank.

generate(), the Engine and the server call a model: ``model(tokens, start_pos, rows=, cache=)``,
``model.new_cache(...)``, ``cache.copy_prefix(...)``. On rank 0 a :class:`TPDriver` stands in for
the sharded model: before running a call on its own shard it broadcasts the call (a small pickled
message: the command and its CPU tensors) to the other ranks, whose :func:`follow` loop runs the
same call on theirs, so the collectives inside the forward pair up. Nothing else in the library
knows that the model is split.

Caches: the Engine owns its KV cache; rank 0's is made by ``driver.new_cache``, which tells every
follower to allocate its own (local heads) under the same id, and to free it when rank 0's is
garbage-collected. Row changes (``KVCache.copy_prefix``, ``clear_prefix``) are mirrored the same
way: code that changes a cache's rows outside a forward must do it through a KVCache method
mirrored here.

Failures: a rank that dies closes its connections, and the others' next collective raises at once;
a rank that hangs is caught by the process group's timeout. A heartbeat from rank 0 keeps idle
followers (an idle server) inside that timeout. Rank 0 then raises :class:`~nemo_ref.tp.TPError`
(or calls ``on_failure``, which the command line uses to exit), and a follower's ``follow()``
raises it: no rank is left waiting.
"""

from __future__ import annotations

import inspect
import itertools
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import torch
import torch.distributed as dist

from .kv_cache import KVCache
from .tp import DEFAULT_TIMEOUT_S, TPError, env_world_size, init_from_env

__all__ = ["TPDriver", "follow"]

# Message kinds (the first element of every broadcast tuple).
FORWARD, NEW_CACHE, FREE_CACHES, CACHE_CALL, HEARTBEAT, SHUTDOWN = (
    "forward",
    "new_cache",
    "free_caches",
    "cache_call",
    "heartbeat",
    "shutdown",
)


# Model methods rank 0 may call on its own shard alone (no collectives, no state the others need).
_LOCAL_METHODS = frozenset({"num_parameters", "named_parameters", "parameters", "state_dict"})


def _to_cpu(value: Any) -> Any:
    return value.detach().cpu() if torch.is_tensor(value) else value


def _to_device(value: Any, device: torch.device) -> Any:
    return value.to(device) if torch.is_tensor(value) else value


class _DrivenCache(KVCache):
    """Rank 0's KV cache: a method that changes its rows runs on the followers' caches of the same
    id first. The engine must change rows only through such methods, never by writing ``k``/``v``."""

    driver: TPDriver
    cache_id: int

    def _mirror(self, method: str, *args: Any) -> None:
        self.driver._command((CACHE_CALL, self.cache_id, method, args))

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        self._mirror("copy_prefix", src, dst, length)
        super().copy_prefix(src, dst, length)

    def clear_prefix(self, row: int, length: int) -> None:
        self._mirror("clear_prefix", row, length)
        super().clear_prefix(row, length)


class TPDriver:
    """Rank 0's stand-in for a sharded model: calls are broadcast to :func:`follow`, then run here.

    Attributes (``args``, ``tok_embeddings``, ``random_weights``...) are read from the local
    shard; other methods of the model are refused, since they would run on rank 0 alone. ``on_failure``: called with the :class:`TPError` when a collective fails (default: the
    error is raised, and every later call raises it again). ``heartbeat_s``: how often an idle
    driver pings the followers (default: a fifth of the timeout, ``NEMO_REF_TP_TIMEOUT``).
    """

    def __init__(
        self,
        model: Any,
        *,
        on_failure: Callable[[TPError], None] | None = None,
        heartbeat_s: float | None = None,
    ):
        if getattr(model, "tp", None) is None:
            raise TPError("TPDriver needs a sharded model (tp.parallelize / tp_load.load_model_tp)")
        if model.tp.rank != 0:
            raise TPError(f"the driver runs on rank 0; this is rank {model.tp.rank} (it should follow())")
        self.model = model
        self.group = model.tp.group
        self.device = model.tok_embeddings.weight.device
        self.on_failure = on_failure
        self.failed: TPError | None = None
        self._lock = threading.Lock()  # one command at a time, from any thread
        self._ids = itertools.count(1)
        self._dead: list[int] = []  # ids of collected caches, freed on the followers at the next command
        self._last = time.monotonic()
        self._closed = False
        if heartbeat_s is None:
            heartbeat_s = _timeout_s() / 5
        self._heartbeat = threading.Thread(
            target=self._beat, args=(heartbeat_s,), name="nemo-ref-tp-heartbeat", daemon=True
        )
        self._heartbeat.start()
        _drivers.add(self)

    def __getattr__(self, name: str) -> Any:  # only for what this class does not define
        if "model" not in self.__dict__:
            raise AttributeError(name)
        value = getattr(self.__dict__["model"], name)
        if inspect.ismethod(value) and name not in _LOCAL_METHODS:
            # It would run on rank 0 alone: the followers would never enter its collectives.
            raise TPError(
                f"model.{name}() is not broadcast by the tensor-parallel driver; run it on every "
                "rank (before driving), or add it to tp_driver's protocol"
            )
        return value

    # ---- what generate(), the Engine and the server call ----------------------------------------

    def __call__(
        self, tokens: torch.Tensor, start_pos: int | torch.Tensor = 0, **kwargs: Any
    ) -> torch.Tensor:
        cache = kwargs.pop("cache", None)
        cache_id = cache.cache_id if isinstance(cache, _DrivenCache) else None
        if cache is not None and cache_id is None:
            raise TPError("a tensor-parallel model needs a KV cache made by its driver's new_cache()")
        vocab = self.model.args.vocab_size
        cpu_tokens = tokens.detach().cpu()
        if cpu_tokens.numel() and not (int(cpu_tokens.min()) >= 0 and int(cpu_tokens.max()) < vocab):
            # One rank's embedding rows would silently give 0 where one process raises: say it here.
            raise ValueError(f"token ids must lie in [0, {vocab})")
        message = (
            FORWARD,
            cache_id,
            cpu_tokens,
            _to_cpu(start_pos),
            {k: _to_cpu(v) for k, v in kwargs.items()},
        )
        return self._command(message, lambda: self.model(tokens, start_pos, cache=cache, **kwargs))

    forward = __call__

    def new_cache(self, max_batch: int, max_len: int | None = None) -> KVCache:
        cache_id = next(self._ids)

        def allocate() -> _DrivenCache:
            local = self.model.new_cache(max_batch, max_len)
            cache = _DrivenCache(**{f.name: getattr(local, f.name) for f in fields(local)})
            cache.driver, cache.cache_id = self, cache_id
            return cache

        cache = self._command((NEW_CACHE, cache_id, max_batch, max_len), allocate)
        weakref.finalize(cache, self._dead.append, cache_id)
        return cache

    def shutdown(self) -> None:
        """Tell the followers to return from :func:`follow`; the driver cannot be used afterwards."""
        if self._closed or self.failed is not None:
            self._closed = True
            return
        self._command((SHUTDOWN,))
        self._closed = True

    # ---- the protocol ---------------------------------------------------------------------------

    def _command(self, message: tuple, run_local: Callable[[], Any] | None = None) -> Any:
        """Broadcast ``message``, then run it here; a failed collective is fatal to the group."""
        with self._lock:
            if self.failed is not None:
                raise self.failed
            if self.device.type == "cuda":  # the current device is per thread (engine, heartbeat)
                torch.cuda.set_device(self.device)
            if self._closed:
                raise TPError("the tensor-parallel driver was shut down")
            try:
                dead = []
                while self._dead:  # pop, not copy-and-clear: a finalizer may append meanwhile
                    dead.append(self._dead.pop())
                if dead:
                    dist.broadcast_object_list([(FREE_CACHES, dead)], src=0, group=self.group)
                dist.broadcast_object_list([message], src=0, group=self.group)
                return run_local() if run_local is not None else None
            except ValueError:
                raise  # a bad call: the followers raised the same error on the same inputs, and go on
            except Exception as e:
                self._fail(e)
            finally:
                self._last = time.monotonic()

    def _fail(self, e: Exception) -> None:
        error = TPError(
            f"tensor parallelism failed on rank 0 ({type(e).__name__}: {e}): a rank died, stopped "
            "answering or failed mid-step, so the ranks are out of step and the model cannot run any "
            "more (see every rank's output)"
        )
        self.failed = error
        if self.on_failure is not None:
            self.on_failure(error)
        raise error from e

    def _beat(self, interval: float) -> None:
        while not self._closed and self.failed is None:
            time.sleep(min(interval, 1.0))
            if time.monotonic() - self._last < interval or not self._lock.acquire(blocking=False):
                continue  # a command went out recently, or one is in flight
            self._lock.release()
            try:
                if not self._closed:
                    self._command((HEARTBEAT,))
            except TPError:
                return


def _timeout_s() -> float:
    return float(os.environ.get("NEMO_REF_TP_TIMEOUT", DEFAULT_TIMEOUT_S))


def follow(model: Any) -> None:
    """Run rank 0's calls on this rank's shard until it shuts down; raise TPError if it fails.

    A call that rank 0 rejects (a ValueError on the same inputs, before any collective) is
    rejected here too, and the loop goes on.
    """
    group = model.tp.group
    device = model.tok_embeddings.weight.device
    caches: dict[int, KVCache] = {}
    while True:
        box: list[Any] = [None]
        try:
            dist.broadcast_object_list(box, src=0, group=group)
        except Exception as e:
            raise TPError(
                f"rank {model.tp.rank}: lost rank 0 ({type(e).__name__}: {e}); it died, or stopped "
                "sending for longer than the timeout"
            ) from e
        kind, *rest = box[0]
        if kind == SHUTDOWN:
            return
        try:
            _run(model, caches, kind, rest, device)
        except ValueError:
            continue  # rank 0 raised the same on the same inputs, before any collective
        except Exception as e:
            raise TPError(f"rank {model.tp.rank}: {kind} failed ({type(e).__name__}: {e})") from e


def _run(model: Any, caches: dict[int, KVCache], kind: str, rest: list, device: torch.device) -> None:
    """One command from rank 0, on this rank's shard."""
    if kind == HEARTBEAT:
        return
    if kind == NEW_CACHE:
        cache_id, max_batch, max_len = rest
        caches[cache_id] = model.new_cache(max_batch, max_len)
    elif kind == FREE_CACHES:
        for cache_id in rest[0]:
            caches.pop(cache_id, None)
    elif kind == CACHE_CALL:
        cache_id, method, args = rest
        getattr(caches[cache_id], method)(*args)
    elif kind == FORWARD:
        cache_id, tokens, start_pos, kwargs = rest
        kwargs = {k: _to_device(v, device) for k, v in kwargs.items()}
        cache = caches[cache_id] if cache_id is not None else None
        model(tokens.to(device), _to_device(start_pos, device), cache=cache, **kwargs)
    else:
        raise TPError(f"unknown command {kind!r} from rank 0")


# ---- the command line under torchrun -----------------------------------------------------------

_drivers: weakref.WeakSet[TPDriver] = weakref.WeakSet()  # shut down when rank 0's command returns


def exit_on_failure(error: TPError) -> None:
    """The command line's ``on_failure``: report and exit, so that torchrun sees the failure.

    ``os._exit``: a process group left with a dead peer aborts in its destructor otherwise.
    """
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)


def run_torchrun(args: Any, model_from_args: Callable[[Any], tuple[Any, str | None]]) -> int:
    """``torchrun --nproc-per-node N -m nemo_ref generate|serve ...``: rank 0 runs the command on a
    :class:`TPDriver` (``cli.flags.load_from_args`` makes it), the other ranks :func:`follow` the
    shard ``model_from_args(args)`` builds (``cli.flags.model_from_args``)."""
    import traceback

    if args.command not in ("generate", "serve"):
        print(
            f"error: under torchrun (WORLD_SIZE={env_world_size()}) only generate and serve run "
            f"tensor-parallel; run {args.command!r} as one process",
            file=sys.stderr,
        )
        return 2
    init_from_env(args.device)
    rank = dist.get_rank()
    if rank == 0:
        print(
            f"rank 0: driving {dist.get_world_size()} ranks (pid {os.getpid()})", file=sys.stderr, flush=True
        )
        try:
            code = int(args.func(args) or 0)
        except TPError as e:  # e.g. a world size the model's heads do not divide
            print(f"error: {e}", file=sys.stderr, flush=True)
            code = 1
        finally:
            for driver in list(_drivers):
                driver.shutdown()
        dist.destroy_process_group()
        return code
    try:
        model, _notice = model_from_args(args)
        print(f"rank {rank}: following rank 0 (pid {os.getpid()})", file=sys.stderr, flush=True)
        follow(model)
    except TPError as e:
        exit_on_failure(e)
    except Exception:
        traceback.print_exc()
        exit_on_failure(TPError(f"rank {rank} failed (traceback above)"))
    dist.destroy_process_group()
    return 0
