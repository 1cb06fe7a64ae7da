"""The FastAPI app: OpenAI-compatible routes over one continuous-batching Engine.

``create_app(model, tokenizer, model_name=..., max_batch=..., max_model_len=...)`` builds the app
around a loaded model; ``create_app(loader=fn, ...)`` loads in a background thread instead, so the
server answers at once: /health and every other route say 503 until the model is ready.

Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models (and /v1/models/{id}),
GET /health, POST /tokenize, POST /detokenize. Every error is OpenAI's
``{"error": {"message", "type", "param", "code"}}``: 400 for any bad input (never a 5xx, which
clients retry), 401 without the API key, 404 for unknown routes and models in /v1/models/{id},
413 for a body over the limit, 415 for a POST that is not JSON, 429 (Retry-After) when the
waiting queue is full, 503 while loading. Limits: limits.py.

The event loop only moves bytes: parsing a large body, tokenising, compiling a grammar and
detokenising run in worker threads, after size checks that bound them.

Random weights are announced on every response: the header ``x-nemo-ref-weights: random`` (else
``checkpoint``), ``system_fingerprint: "nemo-ref-random-weights"`` in every completion body and
chunk, and the notice text in /health and /v1/models.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ..chat_messages import ChatFormatError
from ..request import check_token_ids
from ..sampling.params import ParamError
from . import protocol as P
from .jobs import APIError, Job, JobFailed, engine_alive
from .limits import Guard, Limits
from .responses import chat_body, completion_body
from .state import Loader, ServerState
from .streaming import SSE_HEADERS, chat_stream, completion_stream

log = logging.getLogger("nemo_ref.server")

INLINE_PARSE_BYTES = 64 * 1024  # larger bodies are parsed in a worker thread


def _parse_now(model: type[P.BaseModel], raw: bytes):
    try:
        return model.model_validate_json(raw or b"null")
    except P.ValidationError as e:
        message, param = P.first_error(e)
        raise APIError(message, param) from None


async def _parse(model: type[P.BaseModel], raw: bytes):
    if len(raw) <= INLINE_PARSE_BYTES:
        return _parse_now(model, raw)
    return await run_in_threadpool(_parse_now, model, raw)


def _sse_response(gen, job: Job) -> StreamingResponse:
    # The generator cancels the job when the client goes away; the background task covers a
    # disconnect before the generator ever started (it then never runs its `finally`).
    return StreamingResponse(
        gen, media_type="text/event-stream", headers=SSE_HEADERS, background=BackgroundTask(job.cancel)
    )


# ---- the app ------------------------------------------------------------------------------------


class _WeightsHeader:
    """ASGI middleware: ``x-nemo-ref-weights: random | checkpoint | loading`` on every response."""

    def __init__(self, app: Any, state: ServerState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message):
            if message["type"] == "http.response.start":
                s = self.state
                value = "loading" if s.engine is None else ("random" if s.random_weights else "checkpoint")
                message["headers"] = [*message.get("headers", []), (b"x-nemo-ref-weights", value.encode())]
            await send(message)

        await self.app(scope, receive, send_with_header)


def create_app(
    model: Any = None,
    tokenizer: Any = None,
    *,
    model_name: str = "nemo-ref",
    max_batch: int = 8,
    max_model_len: int | None = None,
    sampler: str | None = None,
    notice: str | None = None,
    loader: Loader | None = None,
    on_load_error: Callable[[BaseException], None] | None = None,
    limits: Limits | None = None,
    prefill_chunk: int | None = None,
    semantics: str = "nemo_ref",
) -> FastAPI:
    """The OpenAI-compatible app around ``model`` (or around what ``loader`` returns, loaded in a
    background thread at startup; ``on_load_error`` is called if that fails). ``notice``: the
    random-weights notice (default: a generic one when ``model.random_weights`` is set).
    ``sampler``: "torch" | "triton" (default: triton on CUDA). ``limits``: limits.py.
    ``prefill_chunk``: prompt tokens per engine step (default: the engine's; see engine.py).
    ``semantics``: sample as that engine does (server/semantics.py); "nemo_ref" is the project's own.
    """
    if (model is None) == (loader is None):
        raise ValueError("create_app needs a model and tokenizer, or a loader (not both)")
    state = ServerState(
        model_name=model_name,
        max_batch=max_batch,
        max_model_len=max_model_len,
        sampler=sampler,
        limits=limits,
        prefill_chunk=prefill_chunk,
        semantics=semantics,
    )
    if model is not None:
        if tokenizer is None:
            from ..tokenizer import load_tokenizer

            tokenizer = load_tokenizer()
        state.install(model, tokenizer, notice)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if loader is not None:
            threading.Thread(
                target=state.load, args=(loader, on_load_error), name="nemo-ref-loader", daemon=True
            ).start()
        yield
        state.close()

    app = FastAPI(
        title="nemo_ref",
        description="OpenAI-compatible API for Mistral Nemo (docs/serving.md)",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.server = state
    app.add_middleware(Guard, limits=state.limits)
    app.add_middleware(_WeightsHeader, state=state)  # outermost: on the guard's answers too

    # ---- errors -----------------------------------------------------------------------------

    @app.exception_handler(APIError)
    async def _api_error(_: HTTPRequest, e: APIError):
        type_ = "invalid_request_error" if e.status < 500 else "service_unavailable"
        return JSONResponse(P.error_body(e.message, e.param, type_), status_code=e.status, headers=e.headers)

    @app.exception_handler(ParamError)
    @app.exception_handler(ChatFormatError)
    async def _bad_field(_: HTTPRequest, e: ParamError | ChatFormatError):  # the rule's home named it
        return JSONResponse(P.error_body(str(e), e.param), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http_error(http: HTTPRequest, e: HTTPException):
        message = f"Invalid URL ({http.method} {http.url.path})" if e.status_code == 404 else str(e.detail)
        return JSONResponse(P.error_body(message, None), status_code=e.status_code, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: HTTPRequest, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        loc = [x for x in first.get("loc", ()) if x not in ("body", "query", "path")]
        param = str(loc[0]) if loc else None
        return JSONResponse(P.error_body(f"{param}: {first.get('msg', 'invalid')}", param), status_code=400)

    @app.exception_handler(ClientDisconnect)
    async def _client_left(http: HTTPRequest, _: ClientDisconnect):  # nothing broken: one line
        log.info("client went away during %s %s", http.method, http.url.path)
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def _internal_error(_: HTTPRequest, e: Exception):  # a bug, never bad input
        log.exception("internal error")
        return JSONResponse(P.error_body(f"internal error: {type(e).__name__}", None, "server_error"), 500)

    @app.exception_handler(JobFailed)
    async def _job_failed(_: HTTPRequest, e: JobFailed):
        return JSONResponse(P.error_body(str(e), e.param, e.type), status_code=e.status)

    # ---- routes -----------------------------------------------------------------------------

    @app.get("/health")
    async def health():
        if state.engine is None:
            if state.load_error:
                body = {"status": "error", "error": "the model failed to load (see the server's log)"}
            else:
                body = {"status": "loading", "error": None}
            return JSONResponse(body, status_code=503)
        if not engine_alive(state.engine):
            return JSONResponse({"status": "error", "error": "the engine thread stopped"}, status_code=503)
        running, waiting = state.engine.load
        return {
            "status": "ok",
            "model": state.model_name,
            "weights": "random" if state.random_weights else "checkpoint",
            "notice": state.notice,
            "max_batch": state.engine.max_batch,
            "max_model_len": state.engine.max_len,
            "running": running,
            "waiting": waiting,
            "semantics": state.describe_semantics(),
        }

    def model_card() -> dict:
        card = {"id": state.model_name, "object": "model", "created": state.created, "owned_by": "nemo-ref"}
        if state.engine is not None:
            card["max_model_len"] = state.engine.max_len
            card["weights"] = "random" if state.random_weights else "checkpoint"
            card["notice"] = state.notice
        card["semantics"] = state.describe_semantics()
        return card

    @app.get("/v1/models")
    async def list_models():
        state.ready()
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        state.ready()
        if model_id != state.model_name:
            raise APIError(f"The model {model_id!r} does not exist", "model", 404)
        return model_card()

    async def generation_route(http: HTTPRequest, kind: str):
        """Chat and legacy completions share everything but the request model and the body shape."""
        request_model, make_job, prefix, stream_fn, body_fn = {
            "chat": (P.ChatCompletionRequest, state.chat_job, "chatcmpl", chat_stream, chat_body),
            "completion": (
                P.CompletionRequest,
                state.completion_job,
                "cmpl",
                completion_stream,
                completion_body,
            ),
        }[kind]
        s = state.ready()
        raw, engine_request = await http.body(), None
        if s.semantics is not None:  # the emulated engine owns (and validates) the sampling fields
            raw, engine_request = s.semantics.split(raw)
        body = await _parse(request_model, raw)
        s.check_model(body.model)
        if body.stream_options is not None and not body.stream:
            raise APIError("stream_options is only allowed when stream is true", "stream_options")
        job = await run_in_threadpool(make_job, body)
        if engine_request is not None:
            s.semantics.attach(job.seqs, engine_request)
        job.submit(max_waiting=s.limits.max_queue)
        env = s.envelope(prefix, job.seed)
        if body.stream:
            gen = stream_fn(job, env, s.tokenizer, include_usage=body.include_usage())
            return _sse_response(gen, job)
        if not await job.run(http.is_disconnected):
            return Response(status_code=499)  # the client went away; its slots are already free
        return JSONResponse(body_fn(job, env, s.tokenizer))

    @app.post("/v1/chat/completions")
    async def chat_completions(http: HTTPRequest):
        return await generation_route(http, "chat")

    @app.post("/v1/completions")
    async def completions(http: HTTPRequest):
        return await generation_route(http, "completion")

    @app.post("/tokenize")
    async def tokenize(http: HTTPRequest):
        s = state.ready()
        body = await _parse(P.TokenizeRequest, await http.body())
        s.check_model(body.model)
        s.check_prompt_chars(len(body.prompt), "prompt")
        tokens = await run_in_threadpool(s.tokenizer.encode, body.prompt, bos=body.add_special_tokens)
        return {
            "tokens": tokens,
            "count": len(tokens),
            "max_model_len": s.engine.max_len,
            "tokenizer": s.tokenizer.describe(),  # e.g. "tekken v3, 131072 ids"
        }

    @app.post("/detokenize")
    async def detokenize(http: HTTPRequest):
        s = state.ready()
        body = await _parse(P.DetokenizeRequest, await http.body())
        s.check_model(body.model)

        def decode() -> str:
            check_token_ids(body.tokens, s.tokenizer.vocab_size, "tokens")
            return s.tokenizer.decode(body.tokens)

        return {"prompt": await run_in_threadpool(decode)}

    return app
