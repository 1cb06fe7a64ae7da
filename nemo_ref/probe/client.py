"""The probe's HTTP side: one OpenAI-compatible endpoint, a hard request budget, retries.

Every HTTP attempt counts against the budget, retries included, and nothing is sent once it is
spent (``BudgetSpent``). Network errors, 429 and 5xx are retried with exponential backoff (0.5 s,
1 s, 2 s, ... capped at 8 s; a ``Retry-After`` header is honoured up to that cap) and recorded.
Both routes are spoken: ``/v1/completions`` when the endpoint has it (the prompt is then exactly
the text the probe chose), else ``/v1/chat/completions`` (the prompt is one user message). The
API key comes from an environment variable named on the command line, never the key itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF_S = 0.5
BACKOFF_CAP_S = 8.0
MAX_ATTEMPTS = 5  # per request, within the budget


class BudgetSpent(Exception):
    """The request budget is spent: the probe stops and reports what it has."""


@dataclass
class Choice:
    """One sampled choice, normalised across the two routes."""

    text: str
    token: str | None  # the first sampled token's text (from logprobs), when asked for
    top: list[tuple[str, float]]  # the first position's top logprobs, best first
    finish_reason: str | None


@dataclass
class Reply:
    status: int
    choices: list[Choice] = field(default_factory=list)
    error: str | None = None  # the endpoint's error message (4xx)
    body: Any = None

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class Endpoint:
    base_url: str
    model: str
    api_key: str | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    budget: int = 300
    timeout_s: float = 60.0
    force_chat: bool = False
    on_request: Callable[[Endpoint], None] | None = None  # progress callback
    sleep: Callable[[float], None] = time.sleep
    transport: httpx.BaseTransport | None = None  # tests: a transport that restricts the endpoint

    requests: int = 0
    sampled_tokens: int = 0
    retries: list[str] = field(default_factory=list)
    route: str | None = None  # "completions" | "chat", decided on the first generation
    has_tokenize: bool | None = None
    random_weights: bool = False  # the endpoint labels its weights random (nemo-ref does)

    def __post_init__(self) -> None:
        root = self.base_url.rstrip("/")
        self.root = root[: -len("/v1")] if root.endswith("/v1") else root
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._http = httpx.Client(timeout=self.timeout_s, headers=headers, transport=self.transport)

    def close(self) -> None:
        self._http.close()

    @property
    def left(self) -> int:
        return self.budget - self.requests

    # ---- raw HTTP -------------------------------------------------------------------------------

    def _send(self, path: str, body: dict[str, Any]) -> httpx.Response | None:
        """POST with retries; None when every attempt failed at the network level."""
        last = None
        for attempt in range(MAX_ATTEMPTS):
            if self.requests >= self.budget:
                raise BudgetSpent(f"the budget of {self.budget} requests is spent")
            self.requests += 1
            if self.on_request is not None:
                self.on_request(self)
            try:
                resp = self._http.post(self.root + path, json=body)
            except httpx.HTTPError as e:
                last = None
                reason = f"{path}: {type(e).__name__}"
            else:
                if resp.status_code not in RETRY_STATUSES:
                    return resp
                last = resp
                reason = f"{path}: HTTP {resp.status_code}"
            if attempt == MAX_ATTEMPTS - 1 or self.requests >= self.budget:
                self.retries.append(reason + " (gave up)")
                break
            wait = min(BACKOFF_S * 2**attempt, BACKOFF_CAP_S)
            if last is not None and last.headers.get("retry-after", "").isdigit():
                wait = min(float(last.headers["retry-after"]), BACKOFF_CAP_S)
            self.retries.append(f"{reason}, retried after {wait:g} s")
            self.sleep(wait)
        return last

    @staticmethod
    def _error(resp: httpx.Response) -> str:
        try:
            body = resp.json()
        except ValueError:
            return resp.text[:300]
        if isinstance(body, dict):
            err = body.get("error", body.get("detail", body))
            if isinstance(err, dict):
                return str(err.get("message", err))[:300]
            return str(err)[:300]
        return str(body)[:300]

    # ---- generation -----------------------------------------------------------------------------

    def generate(
        self,
        prompt: str | list[int],
        fields: dict[str, Any] | None = None,
        *,
        n: int = 1,
        max_tokens: int = 1,
        top_logprobs: int = 0,
        seed: int | None = None,
        stop: list[str] | None = None,
    ) -> Reply:
        """Sample ``n`` choices of ``max_tokens`` tokens for ``prompt`` with the sampling ``fields``.

        ``top_logprobs`` > 0 asks for logprobs (and that many alternatives); 0 asks for the sampled
        token's logprob only when the route needs it to name the token (always, here: the probe
        maps draws to tokens by the logprobs' token text).
        """
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, **self.extra_body}
        body.update(fields or {})
        if n != 1:
            body["n"] = n
        if seed is not None:
            body["seed"] = seed
        if stop is not None:
            body["stop"] = stop
        if self.route is None:
            self.route = "chat" if self.force_chat else "completions"
            reply = self._generate(prompt, body, top_logprobs)
            if self.route == "completions" and reply.status in (404, 405):
                self.route = "chat"
                return self._generate(prompt, body, top_logprobs)
            return reply
        return self._generate(prompt, body, top_logprobs)

    def _generate(self, prompt: str | list[int], body: dict[str, Any], top_logprobs: int) -> Reply:
        if self.route == "completions":
            body = {**body, "prompt": prompt, "logprobs": max(top_logprobs, 1)}
            resp = self._send("/v1/completions", body)
        else:
            if not isinstance(prompt, str):
                raise ValueError("a token-id prompt needs the completions route")
            body = {**body, "messages": [{"role": "user", "content": prompt}], "logprobs": True}
            if top_logprobs:
                body["top_logprobs"] = top_logprobs
            resp = self._send("/v1/chat/completions", body)
        if resp is None:
            return Reply(0, error="network error")
        if resp.status_code != 200:
            return Reply(resp.status_code, error=self._error(resp))
        data = resp.json()
        if resp.headers.get("x-nemo-ref-weights") == "random" or "random" in str(
            data.get("system_fingerprint")
        ):
            self.random_weights = True
        choices = [self._choice(c) for c in data.get("choices", [])]
        self.sampled_tokens += int((data.get("usage") or {}).get("completion_tokens") or len(choices))
        return Reply(200, choices, body=data)

    def _choice(self, c: dict[str, Any]) -> Choice:
        lp = c.get("logprobs") or {}
        token, top = None, []
        if self.route == "completions":
            text = c.get("text") or ""
            if lp.get("tokens"):
                token = lp["tokens"][0]
                first = (lp.get("top_logprobs") or [None])[0] or {}
                top = sorted(first.items(), key=lambda kv: -kv[1])
        else:
            text = (c.get("message") or {}).get("content") or ""
            content = lp.get("content") or []
            if content:
                token = content[0].get("token")
                top = [(t["token"], float(t["logprob"])) for t in content[0].get("top_logprobs") or []]
        return Choice(text, token, [(t, float(v)) for t, v in top], c.get("finish_reason"))

    # ---- tokenizer routes (vLLM, llama-server and nemo_ref have /tokenize) ------------------------

    def tokenize(self, text: str, special: bool = True) -> list[int] | None:
        if self.has_tokenize is False:
            return None
        resp = self._send("/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": special})
        if resp is None or resp.status_code != 200:
            self.has_tokenize = False
            return None
        self.has_tokenize = True
        body = resp.json()
        tokens = body.get("tokens") if isinstance(body, dict) else None
        return [int(t) for t in tokens] if isinstance(tokens, list) else None
