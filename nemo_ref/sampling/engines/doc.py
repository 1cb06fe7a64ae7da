"""docs/engines.md, rendered from the engine definitions: `python -m nemo_ref.sampling.engines.doc`.

Every cell of the tables is computed from an EngineSpec (or, for the worked examples, by running the
engines), and carries a footnote naming the engine source file (at the engine's version) that
decides it. tests/engines/test_doc.py fails when the committed page differs from `render()`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from ..params import DISTRIBUTION_FIELDS, ParamError
from .fields import Field
from .registry import get, names
from .spec import NEUTRAL, Cited, EngineSpec

STEP_WORDS = {
    "logit_bias": "bias",
    "repetition": "repetition",
    "presence_frequency": "presence/frequency",
    "normalised_frequency": "frequency",
    "greedy": "(T=0: argmax)",
    "temperature": "**temperature**",
    "min_p": "min_p",
    "top_k": "top_k",
    "top_p": "top_p",
}
SCOPE_WORDS = {
    "prompt+output": "prompt + output",
    "output": "output only",
    "window": "last `repeat_last_n` tokens of prompt + output",
    "none": "(no such penalty)",
}
TIES_WORDS = {
    "keep": "all ties at the cut kept",
    "exactly_k": "exactly k, rank order",
    "exactly_k_unspecified": "exactly k; which tied token survives is unspecified",
    "none": "(no top_k)",
}
ZERO_T_WORDS = {
    "greedy": "greedy: argmax, filters skipped",
    "reject": "an error",
    "keep_first_max": "temperature keeps the first maximum (after the filters)",
    "greedy_via_top_k": "T < 1e-6 becomes T = 1 and top_k = 1",
    "argmax_if_not_positive": "T <= 0: argmax",
}


class _Notes:
    """Footnotes: one number per distinct (engine version, source file, assumed)."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str, bool], int] = {}

    def cite(self, spec: EngineSpec, source: str, assumed: bool = False) -> str:
        if not source:
            return ""
        key = (spec.version, source, assumed)
        number = self.items.setdefault(key, len(self.items) + 1)
        return f" [{number}]"

    def render(self) -> list[str]:
        lines = []
        for (version, source, assumed), n in self.items.items():
            tail = " (assumption: the source leaves this open)" if assumed else ""
            lines.append(f"{n}. {version}: `{source}`{tail}")
        return lines


def _cell(notes: _Notes, spec: EngineSpec, text: str, choice: Cited) -> str:
    mark = " *(assumed)*" if choice.assumed else ""
    return f"{text}{mark}{notes.cite(spec, choice.source, choice.assumed)}"


def _has(spec: EngineSpec, step: str) -> bool:
    return step in spec.order.value


def _order(spec: EngineSpec) -> str:
    return " → ".join(STEP_WORDS[s] for s in spec.order.value) + " → draw"


def _top_p_where(spec: EngineSpec) -> str:
    order = spec.order.value
    if not _has(spec, "top_p"):
        return "(no top_p)"
    i = order.index("top_p")
    before = [s for s in ("min_p", "top_k") if s in order[:i]]
    after = [s for s in ("min_p", "top_k") if s in order[i + 1 :]]
    rule = "keep A(t) < p" if spec.top_p_boundary.value == "lt" else "keep A(t) <= p"
    tempered = "tempered" if "temperature" in order[:i] else "untempered"
    where = f"on the {tempered} distribution"
    if before:
        where += f" renormalised after {', '.join(before)}"
    elif after:
        where += f", before {', '.join(after)} (not renormalised)"
    return f"{rule}, {where}"


def _temperature_place(spec: EngineSpec) -> str:
    order = spec.order.value
    filters = [i for i, s in enumerate(order) if s in ("min_p", "top_k", "top_p")]
    if not filters:
        return "(no filters)"
    return "before the filters" if order.index("temperature") < filters[0] else "last, after the filters"


def _min_p_place(spec: EngineSpec) -> str:
    if not _has(spec, "min_p") or spec.fields["min_p"].treatment == "unsupported":
        return "(no min_p)"
    order = spec.order.value
    place = "after temperature" if order.index("temperature") < order.index("min_p") else "before temperature"
    if spec.fields["min_p"].treatment == "ignore":
        return f"{place}; not settable on this route (default {spec.defaults.value.get('min_p', 0.0):g})"
    return place


def _defaults(e: Any) -> str:
    knobs = e._defaults
    shown = [f"T {knobs['temperature']:g}", f"top_p {knobs['top_p']:g}"]
    shown.append(f"top_k {knobs['top_k']}" if knobs["top_k"] else "top_k off")
    shown.append(f"min_p {knobs['min_p']:g}")
    if knobs["repeat_last_n"] is not None:
        shown.append(f"window {knobs['repeat_last_n']}")
    return ", ".join(shown)


def _choice_rows(notes: _Notes) -> list[tuple[str, Callable[[Any], str]]]:
    def c(attr: str, words: Callable[[EngineSpec], str]) -> Callable[[Any], str]:
        return lambda e: _cell(notes, e.spec, words(e.spec), getattr(e.spec, attr))

    return [
        ("step order", c("order", _order)),
        ("defaults (OpenAI route)", lambda e: _cell(notes, e.spec, _defaults(e), e.spec.defaults)),
        ("repetition penalty scope", c("repetition_scope", lambda s: SCOPE_WORDS[s.repetition_scope.value])),
        (
            "repetition sign rule",
            c(
                "repetition_sign",
                lambda s: "(none)" if s.repetition_sign.value == "none" else "z > 0: z / r, else z · r",
            ),
        ),
        ("presence/frequency scope", c("penalty_scope", lambda s: SCOPE_WORDS[s.penalty_scope.value])),
        (
            "frequency formula",
            c(
                "frequency_formula",
                lambda s: {
                    "openai": "z -= c·f + (c > 0)·pr",
                    "normalised": "z -= f · c / length",
                    "none": "(none)",
                }[s.frequency_formula.value],
            ),
        ),
        ("temperature vs the filters", c("order", _temperature_place)),
        ("min_p", c("order", _min_p_place)),
        ("top_k ties", c("top_k_ties", lambda s: TIES_WORDS[s.top_k_ties.value])),
        ("top_p", c("top_p_boundary", _top_p_where)),
        ("T = 0", c("zero_temperature", lambda s: ZERO_T_WORDS[s.zero_temperature.value])),
        (
            "tiny T",
            c(
                "min_temperature",
                lambda s: (
                    "as given"
                    if s.min_temperature.value is None
                    else f"0 < T < {s.min_temperature.value:g} raised to {s.min_temperature.value:g}"
                ),
            ),
        ),
        ("logprobs report", c("logprobs_mode", lambda s: f"`{s.logprobs_mode.value}`")),
        (
            "seed",
            c(
                "seeding",
                lambda s: s.seeding.value + ("; **reproduced by `sample()`**" if s.seed_reproducible else ""),
            ),
        ),
        (
            "logit_bias ids >= V",
            c(
                "unknown_bias_ids",
                lambda s: {"drop": "silently dropped", "reject": "an error"}[s.unknown_bias_ids.value],
            ),
        ),
    ]


def _field_text(name: str, f: Field) -> str:
    if f.treatment == "ignore":
        return "**ignored**"
    if f.treatment == "unsupported":
        return f"error: {f.answer}"
    if f.transform is not None:
        return f"sets {f.answer.split('`')[1]}: {f.answer}"
    if f.kind == "bias":
        if math.isinf(f.lo):
            return "any value" + ("; `false` bans the token" if f.false_bans else "")
        rng = f"[{f.lo:g}, {f.hi:g}]"
        return f"clamped to {rng}" if f.violation == "clamp" else f"{rng}, else error"
    if f.required:
        return f"required: {f.answer}"
    if math.isinf(f.lo) and math.isinf(f.hi):
        return "any value"
    lo = "(" if f.lo_open else "["
    hi = ")" if f.hi_open or math.isinf(f.hi) else "]"
    rng = f"{lo}{_number(f.lo)}, {_number(f.hi)}{hi}"
    if f.violation == "clamp":
        return f"clamped to {rng}"
    extra = f", not {f.reject_values[0]}" if f.reject_values else ""
    return f"{rng}{extra}, else error"


def _number(x: float) -> str:
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return "2^31 - 1" if x == 2**31 - 1 else f"{x:g}"


FIELDS = (*DISTRIBUTION_FIELDS, "repeat_penalty", "repeat_last_n")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return out


# ---- worked examples: run every engine --------------------------------------------------------

EXAMPLES: list[tuple[str, list[float], dict[str, Any], list[int], list[int]]] = [
    ("logits [3, 2, 1], top_p 0.8, T 0.5", [3, 2, 1], {"top_p": 0.8, "temperature": 0.5}, [], []),
    ("logits [3, 1, 0], min_p 0.2, T 2", [3, 1, 0], {"min_p": 0.2, "temperature": 2.0}, [], []),
    (
        "probs [.5, .3, .15, .05], top_p 0.82, min_p 0.2",
        np.log([0.5, 0.3, 0.15, 0.05]).tolist(),
        {"top_p": 0.82, "min_p": 0.2, "temperature": 1.0},
        [],
        [],
    ),
    ("logits [2, 1, 1, 0], top_k 2", [2, 1, 1, 0], {"top_k": 2, "temperature": 1.0}, [], []),
    (
        "probs [.4, .3, .2, .1], top_k 2, top_p 0.5",
        np.log([0.4, 0.3, 0.2, 0.1]).tolist(),
        {"top_k": 2, "top_p": 0.5, "temperature": 1.0},
        [],
        [],
    ),
    (
        "logits [1, 1, 0, 0], presence_penalty 1, token 0 in the prompt, token 1 generated",
        [1, 1, 0, 0],
        {"presence_penalty": 1.0, "temperature": 1.0},
        [0],
        [1],
    ),
    (
        "logits [2, 0, 0, 0], repetition_penalty 1.5, token 0 in the prompt",
        [2, 0, 0, 0],
        {"repetition_penalty": 1.5, "temperature": 1.0},
        [0],
        [],
    ),
    ("logits 0, -0.1, ..., -9.9 (100 tokens), empty request", [-0.1 * i for i in range(100)], {}, [], []),
]


def _example_cell(name: str, logits: list[float], request: dict, prompt: list[int], output: list[int]) -> str:
    e = get(name)
    try:
        p = e.probabilities(np.array(logits), request, prompt, output)
    except ParamError as error:
        return f"error ({error.param})"
    kept = np.flatnonzero(p)
    ignored = e.ignored_fields(request)
    note = f" ({', '.join(ignored)} ignored)" if ignored else ""
    if kept.size > 6:
        return f"{kept.size} tokens kept, p0 = {p[0]:.4f}{note}"
    return "{" + ", ".join(f"{i}: {p[i]:.4f}" for i in kept) + "}" + note


BITTEN = [
    (
        "vllm-project/vllm#9453",
        "logprobs once changed with the sampling parameters; vLLM now reports raw logprobs by default "
        "(`--logprobs-mode processed_logprobs` for the others). RL code that needs the sampling "
        "distribution must ask for it (huggingface/trl#4163).",
    ),
    (
        "vllm-project/vllm#15281",
        "the OpenAI server silently applies the model's generation_config.json: an unset knob is not "
        "the documented default unless the server runs with `--generation-config vllm`.",
    ),
    (
        "huggingface/transformers#38549",
        "`generate(do_sample=True)` truncates to top_k 50 unless told otherwise (or the model's "
        "generation_config sets top_k).",
    ),
    (
        "huggingface/transformers#36642",
        "the repetition penalty covers the prompt, chat-template tokens included.",
    ),
    (
        "ggml-org/llama.cpp#4091",
        "llama.cpp applies temperature last: top_p and min_p see the untempered distribution, so "
        "temperature does not change which tokens survive, only their weights.",
    ),
    ("ggml-org/llama.cpp#3841", "the min_p design discussion (min_p relative to the top token)."),
    (
        "ollama/ollama#15783",
        "Ollama's Go sampler (2025 to mid 2026) ignored every penalty; its OpenAI route still ignores "
        "top_k, min_p, repetition_penalty and logit_bias, and top_k 40 stays on.",
    ),
    (
        "huggingface/text-generation-inference#1796",
        "on TGI's chat route presence_penalty becomes repetition_penalty = presence_penalty + 2: "
        "presence_penalty 0 is a repetition penalty of 2.",
    ),
    (
        "huggingface/text-generation-inference#1170",
        "the repetition penalty hits the chat template's tokens (they are in the prompt).",
    ),
]


def render() -> str:
    """The whole of docs/engines.md."""
    engines = [get(n) for n in names()]
    notes = _Notes()
    header = ["", *[f"`{e.name}`" for e in engines]]
    lines = [
        "# Sampling across engines",
        "",
        "<!-- Generated by `python -m nemo_ref.sampling.engines.doc > docs/engines.md` from",
        "     nemo_ref/sampling/engines/definitions/; tests/engines/test_doc.py checks it. -->",
        "",
        "The same request means different things to different engines. `nemo_ref.sampling.engines`",
        "makes each engine's semantics executable: one definition per engine, as named choices over",
        "shared step functions (`nemo_ref/sampling/engines/steps.py`), each choice citing the engine",
        "source file it was read from. This page is generated from those definitions; the numbers in",
        "the footnotes name the file (and the engine's version) behind every cell. Where an engine's",
        "source (or, for OpenAI, the API reference) leaves something open, the cell says *(assumed)*.",
        "",
        "```python",
        "from nemo_ref.sampling import engines",
        'e = engines.get("llama.cpp")              # engines.names(): nemo_ref first',
        'e.resolve({"temperature": 0.7})           # the knobs it runs with, its defaults filled in',
        'e.request_notes({"top_k": 5})             # what it silently ignored, clamped or rewrote',
        "e.probabilities(logits, request, prompt_tokens, output_tokens)   # float64 [V], sums to 1",
        "e.trace(logits, request, prompt_tokens, output_tokens)           # each step, what it dropped",
        "e.logprobs(logits, request, ...)          # what its API reports (raw / tempered / processed)",
        "e.sample(logits, request, prompt_tokens, output_tokens, seed)    # nemo_ref, llama.cpp, Ollama",
        "```",
        "",
        "How it is checked: `hf` against the processors transformers' `generate(do_sample=True)` builds",
        "(`tests/engines/test_hf.py`), `llama.cpp` and `ollama` against llama.cpp's own sampler chain",
        "through llama-cpp-python's bindings, kept sets, probabilities and the token drawn for a seed",
        "(`tests/engines/test_llama_cpp.py`); `nemo_ref` against `reference.py`; the engines whose",
        "code cannot run here by examples derived by hand from the cited source lines",
        "(`tests/engines/test_rules.py`).",
        "",
        "Limits, stated: the emulations compute in float64 (llama.cpp and Ollama on float32-rounded",
        "logits and arithmetic, as those engines hold them), so a cut that falls within rounding of a",
        "boundary may differ from the engine's own float32 or bfloat16 arithmetic. Where an engine's",
        "sort leaves the order of equal values unspecified (ties at llama.cpp's top_k, equal",
        "probabilities straddling a top_p cut), the emulation takes the lower id first. Only the",
        "default chain of each engine is modelled: llama.cpp's `samplers` reordering, DRY, XTC,",
        "typical-p, mirostat, grammars, vLLM's generation_config overlay and SGLang's FlashInfer",
        "kernels are out of scope (see the notes per engine). `sample()` exists only where the draw is",
        "a function of the seed on any machine; for GPU engines it raises NotImplementedError.",
        "",
        "## The choices",
        "",
        "A(t) is the probability mass ranked strictly above token t.",
        "",
    ]
    rows = [[title, *[cell(e) for e in engines]] for title, cell in _choice_rows(notes)]
    rows.insert(0, ["version", *[e.version for e in engines]])
    lines += _table(header, rows)
    lines += [
        "",
        "## What each engine does with each request field",
        "",
        "On the engine's OpenAI-compatible route. **ignored** fields are accepted and silently not",
        "read: the request runs with the engine's default instead.",
        "",
    ]
    field_rows = []
    for name in FIELDS:
        row = [f"`{name}`"]
        for e in engines:
            f = e.spec.fields.get(name)
            if f is None:
                row.append("—")
            else:
                mark = " *(assumed)*" if f.assumed else ""
                row.append(_field_text(name, f) + mark + notes.cite(e.spec, f.source, f.assumed))
        field_rows.append(row)
    lines += _table(header, field_rows)
    lines += [
        "",
        "## Worked examples where engines disagree",
        "",
        "Final distributions `{token: probability}` computed by the emulations (each engine with its",
        "own defaults for the fields the request leaves out); `tests/engines/test_rules.py` derives",
        "them by hand. mistral-inference is given `temperature` 1 where the request has none (its",
        "`generate()` requires one).",
        "",
    ]
    example_rows = []
    for title, logits, request, prompt, output in EXAMPLES:
        row = [title]
        for e in engines:
            req = dict(request)
            if e.name == "mistral-inference":
                req.setdefault("temperature", 1.0)
            row.append(_example_cell(e.name, logits, req, prompt, output))
        example_rows.append(row)
    lines += _table(["example", *header[1:]], example_rows)
    lines += [
        "",
        "How to read them: temperature-first engines see 0.867 of the mass on the top token at",
        "T 0.5 (top_p 0.8 stops there), llama.cpp and Ollama measure top_p before temperature (0.665)",
        "and keep two. SGLang measures top_p on the distribution before top_k, so with top_k 2 and",
        "top_p 0.5 the second token's mass above (0.4) passes; the engines that renormalise after",
        "top_k see 0.571 above it and stop. Penalty scopes: vLLM, SGLang and OpenAI penalise only",
        "generated tokens, llama.cpp's window also covers the prompt, and TGI turns presence_penalty",
        "into a repetition penalty of 3 over the prompt and the output.",
        "",
        "## Where users got bitten",
        "",
    ]
    lines += [f"- {ref}: {text}" for ref, text in BITTEN]
    lines += ["", "## Notes per engine", ""]
    for e in engines:
        for note in e.spec.notes:
            lines.append(f"- `{e.name}`: {note}")
    lines += ["", "## Sources", ""]
    lines += notes.render()
    neutral = ", ".join(f"{k} {v}" for k, v in NEUTRAL.items() if k not in ("logit_bias", "repeat_last_n"))
    lines += ["", f"Neutral values (a knob at its off value): {neutral}.", ""]
    return "\n".join(lines)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
