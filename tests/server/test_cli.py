"""``nemo-ref serve``: the command's wiring, end to end in a subprocess, and its lazy imports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest


def test_cli_does_not_import_the_server_stack():
    code = (
        "import sys, nemo_ref.cli; nemo_ref.cli.build_parser(); "
        "print(*(m in sys.modules for m in ('fastapi', 'uvicorn', 'starlette')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_serve_help_lists_the_options():
    out = subprocess.run(
        [sys.executable, "-m", "nemo_ref.cli", "serve", "--help"], capture_output=True, text=True, check=True
    )
    for option in ("--checkpoint", "--host", "--port", "--max-batch", "--max-model-len", "--preset"):
        assert option in out.stdout


def test_serve_end_to_end():
    """503 (or not yet listening) while loading, then a real answer labelled as random weights;
    the API key (from the environment) is required on every route but /health."""
    httpx = pytest.importorskip("httpx")
    openai = pytest.importorskip("openai")
    pytest.importorskip("uvicorn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "nemo_ref.cli", "serve", "--preset", "nemo-tiny", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--max-batch", "2", "--max-model-len", "256", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NEMO_REF_API_KEY": "s3cret"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        seen = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                r = httpx.get(url + "/health", timeout=5)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            seen.add(r.status_code)
            if r.status_code == 200:
                break
            assert r.status_code == 503 and r.json()["status"] == "loading", (r.status_code, r.text[:500])
            time.sleep(0.1)
        assert 200 in seen
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        assert httpx.get(url + "/v1/models").status_code == 401
        client = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="nemo-tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3, seed=1
        )
        assert raw.headers["x-nemo-ref-weights"] == "random"
        r = raw.parse()
        assert r.usage.completion_tokens == 3 and r.system_fingerprint == "nemo-ref-random-weights"
        assert "random weights" in httpx.get(url + "/health").json()["notice"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "random weights" in err and "API key required" in err


def test_serve_exits_nonzero_when_the_model_fails_to_load(tmp_path):
    """Before: the server kept running, answering 503 with the error (and its path) forever."""
    pytest.importorskip("uvicorn")
    missing = tmp_path / "no-such-checkpoint"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "nemo_ref.cli", "serve", "--checkpoint", str(missing), "--port", str(port)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "error: the model failed to load" in out.stderr and str(missing) in out.stderr
