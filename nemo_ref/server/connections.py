"""Connections: uvicorn's settings for a server that idle or half-sent connections cannot exhaust.

uvicorn (0.54) has no timeout on a request's headers: a connection that sends half a request line
and waits is kept forever, and 20,000 of them exhaust the process's file descriptors. Here:

- ``HEADER_TIMEOUT_S``: a connection must send a request's complete headers within this time
  of connecting (or of its previous response); otherwise it is closed. The body has its own
  deadline (limits.Guard, ``body_timeout_s``);
- ``max_connections``: connections beyond it are closed as soon as they are accepted (never more
  than the process's file-descriptor limit allows, less a reserve for the model's own files);
- ``limit_concurrency``: uvicorn answers 503 to requests beyond it;
- ``timeout_keep_alive``: an idle keep-alive connection is closed after it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from .limits import DEFAULT_LIMIT_CONCURRENCY, DEFAULT_MAX_CONNECTIONS, HEADER_TIMEOUT_S, KEEP_ALIVE_S


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers and a connection cap."""

    header_timeout_s = HEADER_TIMEOUT_S
    max_connections = DEFAULT_MAX_CONNECTIONS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.close()  # connection_lost removes it from the set
            return
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        # The deadline holds for the cycle current now: a new request (a new cycle) disarms it.
        self.loop.call_later(self.header_timeout_s, self._header_deadline, self.cycle)

    def _header_deadline(self, cycle: Any) -> None:
        waiting = cycle is None or cycle.response_complete
        if self.cycle is cycle and waiting and not self.transport.is_closing():
            self.transport.close()


def _descriptor_budget(reserve: int = 64) -> int:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):  # no such limit here (Windows)
        return 1 << 30
    return (1 << 30) if soft == resource.RLIM_INFINITY else max(1, soft - reserve)


def protocol_class(header_timeout_s: float, max_connections: int) -> type[BoundedH11Protocol]:
    return type(
        "BoundedH11Protocol",
        (BoundedH11Protocol,),
        {"header_timeout_s": header_timeout_s, "max_connections": max_connections},
    )


def uvicorn_config(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    header_timeout_s: float = HEADER_TIMEOUT_S,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    limit_concurrency: int = DEFAULT_LIMIT_CONCURRENCY,
    **kw: Any,
):
    """A ``uvicorn.Config`` with the bounds above (``kw`` goes to uvicorn.Config)."""
    import uvicorn

    max_connections = min(max_connections, _descriptor_budget())
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=protocol_class(header_timeout_s, max_connections),
        limit_concurrency=limit_concurrency,
        timeout_keep_alive=KEEP_ALIVE_S,
        **kw,
    )
