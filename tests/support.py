"""Helpers shared by the test suite (import them as ``from tests.support import ...``).

Fixtures are in conftest.py files (tests/conftest.py for those of several parts, tests/<part>/
conftest.py for one part's); the functions and constants they and the tests need are here:

- ``random_model``: a small random-weight model whose attention is far from uniform;
- ``rel_err``: the relative error every logits comparison states its bound in;
- ``load_script``: a script of scripts/ as a module (the probe tests drive bench_probe.py's
  endpoints; scripts are not a package);
- ``SMALL_OBJECT``, ``OPEN_WEATHER``: the small schema and tool the termination tests share;
- the test server: one real uvicorn server per test process, on loopback, for tests/server/. The
  model is ``nemo-tiny`` with deterministic random weights and the real Tekken tokenizer. The server
  runs in a daemon thread on a free 127.0.0.1 port; ``running_server()`` is cached per process, so
  every test module gets the same instance. Clients are the official ``openai`` package with
  ``max_retries=0``, and ``httpx`` for raw bodies.
"""

from __future__ import annotations

import atexit
import importlib.util
import socket
import threading
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from nemo_ref.config import ModelArgs
from nemo_ref.model import Transformer

ROOT = Path(__file__).resolve().parent.parent  # the checkout


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|, in float32 or wider (bf16 inputs are widened first)."""
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    a, b = a.to(dtype), b.to(dtype)
    return ((a - b).abs().max() / b.abs().max()).item()


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The small schema and tool of the termination tests (tests/structured/): what clients send,
# nothing said about additionalProperties.
SMALL_OBJECT = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "temperature": {"type": "integer", "minimum": -50, "maximum": 50},
        "raining": {"type": "boolean"},
    },
    "required": ["city", "temperature", "raining"],
}
OPEN_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 12},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}


MODEL_NAME = "nemo-tiny-test"
MAX_BATCH = 8
MAX_MODEL_LEN = 1024
HEADER_TIMEOUT_S = 1.0  # short, so that a test can watch a half-sent request being dropped
MAX_QUEUE = 16
MAX_REQUEST_TOKENS = 4096  # n x max_tokens


@dataclass
class Server:
    app: Any
    port: int
    uvicorn: Any
    thread: threading.Thread

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def engine(self):
        return self.app.state.server.engine

    @property
    def tokenizer(self):
        return self.app.state.server.tokenizer

    def client(self, **kw):
        import openai

        return openai.OpenAI(base_url=self.base_url + "/v1", api_key="x", max_retries=0, **kw)

    def async_client(self, **kw):
        import openai

        return openai.AsyncOpenAI(base_url=self.base_url + "/v1", api_key="x", max_retries=0, **kw)

    def wait_idle(self, timeout: float = 5.0) -> tuple[int, int]:
        """Wait until the engine runs nothing; returns its last (running, waiting)."""
        deadline = time.monotonic() + timeout
        load = self.engine.load
        while load != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.01)
            load = self.engine.load
        return load


@cache
def _start() -> Server:
    import uvicorn

    from nemo_ref.demo import embedded_model
    from nemo_ref.server.app import create_app
    from nemo_ref.server.connections import uvicorn_config
    from nemo_ref.server.limits import Limits
    from nemo_ref.tokenizer import load_tokenizer

    model = embedded_model("nemo-tiny", seed=0)
    app = create_app(
        model,
        load_tokenizer(),
        model_name=MODEL_NAME,
        max_batch=MAX_BATCH,
        max_model_len=MAX_MODEL_LEN,
        limits=Limits(max_queue=MAX_QUEUE, max_request_tokens=MAX_REQUEST_TOKENS),
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn_config(
        app, log_level="warning", timeout_graceful_shutdown=1, header_timeout_s=HEADER_TIMEOUT_S
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=5)

    atexit.register(stop)
    return Server(app, sock.getsockname()[1], server, thread)


def running_server() -> Server:
    """The process's test server (started on first use); skips without the server extras.

    tests/server/conftest.py's ``server`` fixture returns it.
    """
    for module in ("fastapi", "uvicorn", "openai", "llguidance", "mistral_common"):
        pytest.importorskip(module)
    return _start()


def random_model(
    args: ModelArgs | str = "nemo-tiny",
    seed: int = 0,
    std: float = 0.1,
    dtype: torch.dtype = torch.float32,
    attn_backend: str = "sdpa",
) -> Transformer:
    """A model with random weights large enough that attention is far from uniform.

    ``init_random``'s default std (0.02) leaves attention nearly uniform at these sizes, so RoPE or
    q/k-permutation bugs would barely move the logits; std 0.1 makes them visible. The norm weights
    are randomised too (1 + 0.1 N(0,1)) so that a norm loaded into the wrong place shows.
    """
    if isinstance(args, str):
        args = ModelArgs.preset(args)
    model = Transformer(args, attn_backend=attn_backend, dtype=dtype).init_random(seed, std=std)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
    return model
