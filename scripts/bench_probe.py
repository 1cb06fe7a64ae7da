"""The probe's proof: serve the embedded model under each --semantics and probe every endpoint.

    python scripts/bench_probe.py [--out benchmarks/probe-confusion] [--budget 200]

Every server runs in this process (uvicorn in a thread, 127.0.0.1, one Engine each over the same
model); the probe talks to them over HTTP only. The result is a confusion matrix (true engine x the
probe's answer), the requests and sampled tokens each endpoint cost, and a check that a
deliberately inconsistent engine (llama.cpp's truncation order with vLLM's penalty scopes) comes
back as "no engine fits". tests/test_probe_proof.py runs the same function.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any


def serve_in_thread(
    model: Any, tokenizer: Any, semantics: str, *, max_batch: int = 32, model_name: str = "m"
):
    """Start an app with ``semantics`` on a free loopback port; returns (base_url, stop)."""
    import uvicorn

    from nemo_ref.server.app import create_app

    app = create_app(
        model, tokenizer, model_name=model_name, max_batch=max_batch, max_model_len=512, semantics=semantics
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the {semantics} server did not start")
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=5)

    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop
