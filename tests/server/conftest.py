"""The server tests' ``server``: the one test server of the process (tests/support.py starts it on
first use; it skips without the server extras)."""

from __future__ import annotations

import pytest

from tests.support import Server, running_server


@pytest.fixture(scope="module")
def server() -> Server:
    return running_server()
