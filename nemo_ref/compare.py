"""One set of logits, one request, every engine's sampling rules side by side (`nemo-ref compare`).

Each engine in `nemo_ref.sampling.engines` turns the same logits and the same OpenAI-style request
into its own next-token distribution (docs/engines.md says why they differ). `compare` runs them all
and lines the results up token by token: the final probability under each engine, or which of that
engine's steps dropped the token; an engine that rejects a field shows its error instead.

    from nemo_ref.compare import compare
    c = compare(logits, {"temperature": 0.7, "top_p": 0.9}, prompt_tokens=ids)
    print(c.table())          # or c.to_json() for scripts
    c.disagreements()         # token ids on which the engines differ

Logits files (`--logits`, `--save-logits`): ``.npz`` with ``logits`` float [V] and optional
``prompt_tokens`` / ``output_tokens`` int [n] and ``notice`` (a string, e.g. "random weights"); a bare
``.npy`` [V]; or a ``.pt`` holding a tensor [V] or a dict with the ``.npz`` keys.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .sampling import ParamError
from .sampling.engines import registry
from .sampling.params import DISTRIBUTION_FIELDS

REQUEST_FIELDS = DISTRIBUTION_FIELDS
DEFAULT_TOP = 10
BOLD_RED, RESET = "\x1b[1;31m", "\x1b[0m"
# Two probabilities are "different" when they differ by more than this fraction of the larger: far
# above float32 rounding (the engines that compute in float32), far below what a reader would call equal.
RTOL = 1e-3


@dataclass(frozen=True)
class EngineResult:
    """One engine's answer: its distribution and what dropped each token, or the error it returned."""

    name: str
    version: str
    logprobs_mode: str
    resolved: dict | None  # the request with this engine's defaults applied
    steps: tuple[tuple[str, Any], ...]  # its pipeline: (step name, setting), in order
    probs: np.ndarray | None  # float64 [V], sums to 1
    dropped_by: np.ndarray | None  # int [V]: -1 kept, else the index in `steps` that dropped it
    error: ParamError | None = None
    notes: tuple[str, ...] = ()  # what the engine silently did to the request (ignored, clamped, rewritten)

    @property
    def ok(self) -> bool:
        return self.error is None

    def dropper(self, token: int) -> str | None:
        """The name of the step that dropped ``token``, or None if it survived."""
        i = int(self.dropped_by[token])
        return None if i < 0 else self.steps[i][0]


@dataclass(frozen=True, repr=False)
class Comparison:
    """What `compare` returns: print it (the table), or ask it (`to_json`, `disagreements`, ...)."""

    logits: np.ndarray  # float64 [V]
    request: dict
    prompt_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]
    results: tuple[EngineResult, ...]
    token_str: Callable[[int], str] | None = None
    notice: str | None = None  # e.g. the random-weights notice of the model that made the logits

    def __repr__(self) -> str:
        answered = sum(r.ok for r in self.results)
        return (
            f"<Comparison of {len(self.results)} engines ({answered} answered) on {len(self.logits)} logits, "
            f"request {_jsonable(self.request)}: print() it for the table>"
        )

    def __str__(self) -> str:
        return self.table()

    @property
    def raw(self) -> np.ndarray:
        """softmax(logits): what every engine starts from (and what raw-mode logprobs report)."""
        z = self.logits - self.logits.max()
        e = np.exp(z)
        return e / e.sum()

    @property
    def baseline(self) -> EngineResult | None:
        """The first engine that answered: the column the others are compared with."""
        return next((r for r in self.results if r.ok), None)

    def rows(self, top: int = DEFAULT_TOP) -> list[int]:
        """Token ids to show: the ``top`` most likely under the raw logits, plus every engine's own
        ``top`` most likely (a logit_bias can lift a token from anywhere); by raw logit, then id."""
        chosen = set(_top(self.logits, top))
        for r in self.results:
            if r.ok:
                chosen.update(t for t in _top(r.probs, top) if r.probs[t] > 0)
        return sorted(chosen, key=lambda t: (-self.logits[t], t))

    def differs(self, token: int, result: EngineResult, rtol: float = RTOL) -> bool:
        """Whether ``result`` disagrees with the baseline on ``token`` (kept or not, or probability)."""
        base = self.baseline
        if base is None or not result.ok:
            return False
        a, b = base.probs[token], result.probs[token]
        return bool(_different(np.array([a]), np.array([b]), rtol)[0])

    def disagreements(self, rtol: float = RTOL) -> list[int]:
        """Every token id (whole vocabulary) on which some engine differs from the baseline."""
        base = self.baseline
        if base is None:
            return []
        mask = np.zeros(len(self.logits), dtype=bool)
        for r in self.results:
            if r.ok:
                mask |= _different(base.probs, r.probs, rtol)
        return np.flatnonzero(mask).tolist()

    def total_variation(self, result: EngineResult) -> float | None:
        """Half the L1 distance between ``result``'s distribution and the baseline's (0 same, 1 disjoint)."""
        base = self.baseline
        if base is None or not result.ok:
            return None
        return float(0.5 * np.abs(base.probs - result.probs).sum())

    def _text(self, token: int) -> str | None:
        return None if self.token_str is None else self.token_str(token)

    def to_json(self, top: int = DEFAULT_TOP) -> dict:
        """Everything the table shows, as plain JSON types (``json.dumps`` works on it)."""
        base = self.baseline
        raw = self.raw
        out: dict[str, Any] = {}
        if self.notice:
            out["warning"] = self.notice
        out.update(
            {
                "request": _jsonable(self.request),
                "vocab_size": len(self.logits),
                "prompt_tokens": len(self.prompt_tokens),
                "output_tokens": len(self.output_tokens),
                "baseline": base.name if base else None,
                "engines": [],
                "tokens": [],
            }
        )
        for r in self.results:
            entry: dict[str, Any] = {"name": r.name, "version": r.version, "logprobs_mode": r.logprobs_mode}
            if r.ok:
                entry.update(
                    ok=True,
                    resolved=_jsonable(r.resolved),
                    steps=[[name, _jsonable(setting)] for name, setting in r.steps],
                    kept=int((r.probs > 0).sum()),
                    total_variation=self.total_variation(r),
                    notes=list(r.notes),
                )
            else:
                entry.update(ok=False, error={"param": r.error.param, "message": r.error.message})
            out["engines"].append(entry)
        for t in self.rows(top):
            cells = {}
            for r in self.results:
                if r.ok:
                    cells[r.name] = {
                        "prob": float(r.probs[t]),
                        "kept": bool(r.probs[t] > 0),
                        "dropped_by": r.dropper(t),
                        "differs": self.differs(t, r),
                    }
            out["tokens"].append(
                {
                    "id": t,
                    "text": self._text(t),
                    "logit": _num(self.logits[t]),
                    "raw_prob": float(raw[t]),
                    "differs": any(c["differs"] for c in cells.values()),
                    "engines": cells,
                }
            )
        return out

    def table(self, top: int = DEFAULT_TOP, color: bool = False) -> str:
        """The side-by-side text table: engines (with defaults and errors), then one row per token.
        ``color``: differing cells also in bold red (ANSI; for a terminal)."""
        base = self.baseline
        raw = self.raw
        lines = [f"{self.notice}"] if self.notice else []
        lines.append(
            f"request {json.dumps(_jsonable(self.request))}; vocabulary {len(self.logits)}, "
            f"{len(self.prompt_tokens)} prompt and {len(self.output_tokens)} output tokens of history"
        )
        lines.append("")
        name_w = max(len(r.name) for r in self.results)
        lines.append(
            f"{'engine':<{name_w}}  {'kept':>7}  {'TV':>6}  {'logprobs':<9}  pipeline (defaults applied)"
        )
        for r in self.results:
            if not r.ok:
                lines.append(f"{r.name:<{name_w}}  rejects {r.error.param}: {r.error.message}")
                continue
            tv_s = "-" if r is base else f"{self.total_variation(r):.4f}"
            pipeline = " > ".join(_step(n, s) for n, s in r.steps if _active(s)) or "(nothing)"
            kept = int((r.probs > 0).sum())
            lines.append(f"{r.name:<{name_w}}  {kept:>7}  {tv_s:>6}  {r.logprobs_mode:<9}  {pipeline}")
            lines += [f"{'':<{name_w}}  note: {note}" for note in r.notes]
        ok = [r for r in self.results if r.ok]
        if not ok:
            lines.append("\nevery engine rejected the request")
            return "\n".join(lines)
        text_w = 14 if self.token_str else 0
        cell_w = max(14, *(len(r.name) for r in ok))
        header = f"  {'id':>7} " + (f"{'token':<{text_w}} " if text_w else "") + f"{'logit':>9} {'raw p':>8}"
        lines += ["", (header + "".join(f" | {r.name:<{cell_w}}" for r in ok)).rstrip()]
        for t in self.rows(top):
            flags = [self.differs(t, r) for r in ok]
            row = f"{'≠' if any(flags) else ' '} {t:>7} "
            if text_w:
                row += f"{_clip(repr(self._text(t)), text_w):<{text_w}} "
            row += f"{_num(self.logits[t]):>9.3f} {_prob(raw[t]):>8}"
            for i, (r, flag) in enumerate(zip(ok, flags, strict=True)):
                cell = _prob(r.probs[t]) if r.probs[t] > 0 else f"✗ {r.dropper(t)}"
                cell = cell + (" *" if flag else "")
                cell = cell if i == len(ok) - 1 else f"{cell:<{cell_w}}"  # no trailing blanks
                row += f" | {BOLD_RED}{cell}{RESET}" if flag and color else f" | {cell}"
            lines.append(row)
        lines += [
            "",
            f"✗ step: dropped by that step. *: differs from {base.name} (kept or not, or by more than "
            f"{RTOL:.1%} of the larger probability); ≠: some engine differs. TV: total variation distance from {base.name} over the "
            f"whole vocabulary. {len(self.disagreements())} of {len(self.logits)} tokens differ somewhere.",
            "Emulated: " + "; ".join(f"{r.name} = {r.version}" for r in self.results) + ".",
        ]
        return "\n".join(lines)


def compare(
    logits: Any,
    request: Mapping[str, Any] | None = None,
    *,
    engines: Sequence[str] | None = None,
    prompt_tokens: Sequence[int] = (),
    output_tokens: Sequence[int] = (),
    token_str: Callable[[int], str] | None = None,
    notice: str | None = None,
) -> Comparison:
    """Run ``request`` on ``logits`` (one position, [V]) under each engine in ``engines`` (default: all).

    ``request`` holds the OpenAI-style fields exactly as a client sends them; an unset field takes
    each engine's own default. An engine that rejects a field is kept in the result with its error.
    """
    z = as_logits(logits)
    request = dict(request or {})
    unknown = sorted(set(request) - set(REQUEST_FIELDS))
    if unknown:
        raise ValueError(f"unknown request fields {unknown}; compare knows {list(REQUEST_FIELDS)}")
    names = list(registry.names()) if engines is None else list(engines)
    bad = [n for n in names if n not in registry.names()]
    if bad or not names:
        raise ValueError(f"unknown engines {bad or names}; choose from {', '.join(registry.names())}")
    prompt_tokens, output_tokens = (
        _ids("prompt_tokens", prompt_tokens, len(z)),
        _ids("output_tokens", output_tokens, len(z)),
    )
    results = []
    for name in names:
        engine = registry.get(name)
        head = {"name": engine.name, "version": engine.version, "logprobs_mode": engine.logprobs_mode}
        try:
            resolved = engine.resolve(request)
            trace = engine.trace(z, request, prompt_tokens, output_tokens)
        except ParamError as e:
            results.append(
                EngineResult(**head, resolved=None, steps=(), probs=None, dropped_by=None, error=e)
            )
            continue
        notes = engine.request_notes(request)
        results.append(
            EngineResult(
                **head,
                notes=tuple(notes),
                resolved=dict(resolved),
                steps=tuple((str(s), setting) for s, setting in trace.steps),
                probs=np.asarray(trace.final, dtype=np.float64),
                dropped_by=np.asarray(trace.dropped_by, dtype=np.int64),
            )
        )
    return Comparison(z, request, prompt_tokens, output_tokens, tuple(results), token_str, notice)


def next_token_logits(model: Any, token_ids: Sequence[int]) -> np.ndarray:
    """The model's logits for the position after ``token_ids``: float64 [V]."""
    import torch

    device = model.tok_embeddings.weight.device
    with torch.no_grad():
        out = model(torch.tensor([list(token_ids)], device=device), last_only=True)  # [1, 1, V]
    return out[0, -1].double().cpu().numpy()


# ------------------------------------------------------------------------------------------------
# Logits files
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedLogits:
    logits: np.ndarray  # float64 [V]
    prompt_tokens: tuple[int, ...] = ()
    output_tokens: tuple[int, ...] = ()
    notice: str | None = None


def save_logits(
    path: str | Path,
    logits: Any,
    prompt_tokens: Sequence[int] = (),
    output_tokens: Sequence[int] = (),
    notice: str | None = None,
) -> Path:
    """Write a ``.npz`` that `load_logits` (and ``nemo-ref compare --logits``) reads back."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"--save-logits writes a .npz file; got {str(path)!r}")
    z = as_logits(logits)
    arrays = {
        "logits": z,
        "prompt_tokens": np.asarray(_ids("prompt_tokens", prompt_tokens, len(z)), dtype=np.int64),
        "output_tokens": np.asarray(_ids("output_tokens", output_tokens, len(z)), dtype=np.int64),
    }
    if notice:
        arrays["notice"] = np.asarray(notice)
    np.savez(path, **arrays)
    return path


def load_logits(path: str | Path) -> SavedLogits:
    """Read a logits file (see the module docstring for the formats); errors name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"logits file {str(path)!r} does not exist")
    if path.suffix == ".npy":
        return SavedLogits(as_logits(np.load(path, allow_pickle=False), where=str(path)))
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    elif path.suffix == ".pt":
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        data = obj if isinstance(obj, Mapping) else {"logits": obj}
        data = {k: (v.double().numpy() if isinstance(v, torch.Tensor) else v) for k, v in data.items()}
    else:
        raise ValueError(f"logits file {str(path)!r}: expected .npz, .npy or .pt")
    if "logits" not in data:
        raise ValueError(f"logits file {str(path)!r} has no 'logits' entry (has {sorted(data)})")
    z = as_logits(data["logits"], where=str(path))
    notice = data.get("notice")
    return SavedLogits(
        z,
        _ids("prompt_tokens", np.asarray(data.get("prompt_tokens", [])).tolist(), len(z)),
        _ids("output_tokens", np.asarray(data.get("output_tokens", [])).tolist(), len(z)),
        None if notice is None else str(notice),
    )


def as_logits(x: Any, where: str = "logits") -> np.ndarray:
    """One position's logits as float64 [V]: finite or -inf (a masked token), at least one finite."""
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().double().cpu().numpy()
    z = np.asarray(x, dtype=np.float64)
    if z.ndim == 2 and z.shape[0] == 1:
        z = z[0]
    if z.ndim != 1 or z.size == 0:
        raise ValueError(f"{where}: expected one position's logits, shape [V]; got shape {list(z.shape)}")
    bad = np.isnan(z) | (z == np.inf)
    if bad.any():
        raise ValueError(
            f"{where}: logits must be finite or -inf; token {int(np.argmax(bad))} is {z[bad][0]}"
        )
    if not np.isfinite(z).any():
        raise ValueError(f"{where}: every logit is -inf")
    return z


def _ids(name: str, ids: Sequence[int], vocab: int) -> tuple[int, ...]:
    out = tuple(int(t) for t in ids)
    bad = [t for t in out if not 0 <= t < vocab]
    if bad:
        raise ValueError(f"{name}: token ids must lie in [0, {vocab}); got {bad[:5]}")
    return out


# ------------------------------------------------------------------------------------------------
# Formatting helpers
# ------------------------------------------------------------------------------------------------


def _different(p: np.ndarray, q: np.ndarray, rtol: float) -> np.ndarray:
    """Per token: kept by one and not the other, or apart by more than rtol of the larger."""
    return ((p > 0) != (q > 0)) | (np.abs(p - q) > rtol * np.maximum(p, q))


def _top(x: np.ndarray, k: int) -> list[int]:
    """The k largest entries' ids, ties to the lower id (argpartition alone picks among ties at random)."""
    k = min(k, len(x))
    cut = np.partition(x, len(x) - k)[len(x) - k]  # the k-th largest value
    cand = np.flatnonzero(x >= cut)
    return cand[np.lexsort((cand, -x[cand]))][:k].tolist()


def _prob(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-3 else f"{p:.2e}"


def _num(x: float) -> float | str:
    x = float(x)
    return x if math.isfinite(x) else str(x)


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x if x is None or isinstance(x, (bool, int, float, str)) else str(x)


def _active(setting: Any) -> bool:
    """Whether a trace step did something (engines list every step of their order, "off" or not)."""
    return not (isinstance(setting, str) and (setting == "off" or setting.startswith("skipped")))


def _step(name: str, setting: Any) -> str:
    if setting is None or setting is True:
        return name
    text = setting if isinstance(setting, str) else json.dumps(_jsonable(setting), separators=(",", ":"))
    return f"{name} {text}"


def _clip(s: str, width: int) -> str:
    return s if len(s) <= width else s[: width - 1] + "…"
