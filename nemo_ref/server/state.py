"""The server's state: the model, tokenizer and engine behind the routes, and how a request body
becomes an engine ``Job``.

``ServerState.install`` builds the one ``Engine`` around a loaded model. Its context (KV-cache
positions per row) is the model's ``max_positions`` (longer than the trained ``max_seq_len`` only
when a RoPE scaling extends it: that is what the scaling is for), capped by ``max_model_len``
(``--max-model-len``), which sizes the KV cache. ``chat_job`` / ``completion_job`` check a request
(every rule in its one home: SamplingParams for the sampling ranges, chat_messages.py for tools and
tool_choice, structured.py for grammars) and build its job: a bad field raises that home's error
(``ParamError``, ``ChatFormatError``) or an ``APIError``, each a 400 naming the field (app.py's
error handlers). They run in a worker thread, since tokenising and compiling a grammar take time.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..chat_messages import tool_choice_mode, tool_functions
from ..engine import Engine
from . import protocol as P
from .jobs import APIError, Job, build_job, request_grammar
from .limits import Limits, prompt_chars_cap, text_chars

log = logging.getLogger("nemo_ref.server")

RANDOM_FINGERPRINT = "nemo-ref-random-weights"
CHECKPOINT_FINGERPRINT = "nemo-ref"
DEFAULT_RANDOM_NOTICE = "random weights: the text is noise (use --checkpoint DIR for real weights)"

Loader = Callable[[], tuple[Any, Any, str | None]]  # () -> (model, tokenizer, notice or None)


def served_context(args: Any, max_model_len: int | None) -> int:
    """Positions per row the server serves: the model's ``max_positions`` (past the trained
    ``max_seq_len`` only with a RoPE scaling), at most ``max_model_len`` (the KV cache's cap)."""
    context = args.max_positions
    return context if max_model_len is None else min(context, max_model_len)


class ServerState:
    """The model, tokenizer and engine behind the routes (None until loaded)."""

    def __init__(
        self,
        *,
        model_name: str,
        max_batch: int,
        max_model_len: int | None,
        sampler: str | None,
        limits: Limits | None = None,
        prefill_chunk: int | None = None,
        semantics: str = "nemo_ref",
    ):
        self.model_name = model_name
        self.prefill_chunk = prefill_chunk
        self.limits = limits or Limits()
        self.prompt_chars = 0  # set with the tokenizer: longer texts cannot fit (limits.py)
        self.max_batch = max_batch
        self.max_model_len = max_model_len
        self.sampler = sampler
        self.semantics_name = semantics
        self.semantics = None  # another engine's emulation (server/semantics.py), or nemo_ref's own
        if semantics != "nemo_ref":
            from .semantics import Semantics

            self.semantics = Semantics(semantics)
        self.model: Any = None
        self.tokenizer: Any = None
        self.engine: Engine | None = None
        self.notice: str | None = None
        self.load_error: str | None = None
        self.created = int(time.time())

    # ---- loading ------------------------------------------------------------------------------

    def install(self, model: Any, tokenizer: Any, notice: str | None = None) -> None:
        if notice is None and model.random_weights:
            notice = DEFAULT_RANDOM_NOTICE
        context = served_context(model.args, self.max_model_len)
        chunk = {} if self.prefill_chunk is None else {"prefill_chunk": self.prefill_chunk}
        sampler = self.semantics if self.semantics is not None else self.sampler
        engine = Engine(model, max_batch=self.max_batch, max_len=context, sampler=sampler, **chunk)
        _warm_structured(tokenizer)
        longest = max(len(tokenizer.token_bytes(i)) for i in range(tokenizer.n_special, tokenizer.vocab_size))
        self.prompt_chars = prompt_chars_cap(context, longest)
        self.model, self.tokenizer, self.notice = model, tokenizer, notice
        self.engine = engine
        engine.start()

    def load(self, loader: Loader, on_error: Callable[[BaseException], None] | None = None) -> None:
        try:
            self.install(*loader())
        except Exception as e:
            # The error (and any path in it) is for the operator's log only, never for clients.
            log.exception("loading the model failed")
            self.load_error = type(e).__name__
            if on_error is not None:
                on_error(e)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()

    @property
    def random_weights(self) -> bool:
        return self.notice is not None

    @property
    def fingerprint(self) -> str:
        return RANDOM_FINGERPRINT if self.random_weights else CHECKPOINT_FINGERPRINT

    def ready(self) -> ServerState:
        if self.engine is None:
            if self.load_error:
                raise APIError("the model failed to load (see the server's log)", None, 503)
            raise APIError("the model is still loading; retry shortly", None, 503)
        return self

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise APIError(
                f"The model {name!r} does not exist; this server serves {self.model_name!r}", "model"
            )

    def describe_semantics(self) -> dict:
        if self.semantics is None:
            return {"engine": "nemo_ref", "logprobs_mode": "raw (or the request's logprobs_mode)"}
        return self.semantics.describe()

    def envelope(self, prefix: str, seed: int) -> P.Envelope:
        return P.Envelope(
            f"{prefix}-{uuid.uuid4().hex}", int(time.time()), self.model_name, self.fingerprint, seed
        )

    # ---- requests -> jobs (run in a worker thread: tokenising and grammar compiling take time) ----

    def _check_n(self, n: int) -> None:
        if n > self.max_batch:
            raise APIError(f"n must be <= {self.max_batch} (the server's --max-batch); got {n}", "n")

    def check_prompt_chars(self, chars: int, param: str) -> None:
        """Refuse, before tokenising, a text too long to fit in the context whatever it says."""
        if chars > self.prompt_chars:
            raise APIError(
                f"{param}: {chars} characters cannot fit in the context of {self.engine.max_len} "
                f"tokens (at most {self.prompt_chars} characters are accepted)",
                param,
            )

    def chat_job(self, body: P.ChatCompletionRequest) -> Job:
        params = body.params()
        self._check_n(params.n)
        tools = body.tools_json()
        choice = body.tool_choice_json()
        # tools and tool_choice are checked even when no grammar enforces them (structured_outputs false)
        tool_choice_mode(choice, [f.name for f in tool_functions(tools)])
        self.check_prompt_chars(text_chars(body.messages), "messages")
        grammar = None  # first: it checks the schemas of tools and response_format
        if body.structured_outputs is not False:
            parallel = body.parallel_tool_calls is not False
            space = getattr(self.tokenizer, "kind", "tekken") != "tekken"  # `[TOOL_CALLS]▁[`
            grammar = request_grammar(body.response_format_json(), tools, choice, parallel, space)
        prompt_ids = self.tokenizer.encode_chat(body.messages, tools=tools)
        offers_tools = bool(tools) and choice != "none"
        return build_job(
            self.engine,
            self.tokenizer,
            prompt_ids,
            params,
            grammar=grammar,
            tools=offers_tools,
            grammar_param="tools" if offers_tools else "response_format",
            prompt_param="messages",
            max_request_tokens=self.limits.max_request_tokens,
        )

    def completion_job(self, body: P.CompletionRequest) -> Job:
        params = body.params()
        self._check_n(params.n)
        if isinstance(body.prompt, str):
            self.check_prompt_chars(len(body.prompt), "prompt")
            prompt_ids = self.tokenizer.encode(body.prompt, bos=True)
        else:
            prompt_ids = list(body.prompt)
        return build_job(
            self.engine, self.tokenizer, prompt_ids, params, max_request_tokens=self.limits.max_request_tokens
        )


def _warm_structured(tokenizer: Any) -> None:
    """Build llguidance's tokenizer now (0.5 s) rather than in the first structured request."""
    try:
        from ..structured import Constraint, json_grammar

        Constraint(tokenizer, json_grammar({"type": "json_object"}))
    except ImportError:  # llguidance absent: structured requests get a 400 saying so
        pass
