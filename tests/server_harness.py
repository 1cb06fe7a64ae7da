"""One real uvicorn server per test process, on loopback, for the tests/test_server_*.py files.

The model is ``nemo-tiny`` with deterministic random weights and the real Tekken tokenizer. The
server runs in a daemon thread on a free 127.0.0.1 port; every test file's ``server`` fixture
returns the same instance (``running_server()`` is cached per process).
Clients are the official ``openai`` package with ``max_retries=0``, and ``httpx`` for raw bodies.
"""

from __future__ import annotations

import atexit
import socket
import threading
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest

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

    Each test module wraps it in its own ``server`` fixture; all of them get the same server.
    """
    for module in ("fastapi", "uvicorn", "openai", "llguidance", "mistral_common"):
        pytest.importorskip(module)
    return _start()
