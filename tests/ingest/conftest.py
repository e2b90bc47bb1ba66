"""Fixtures of the hostile-input tests: a runtime configured for every webhook route of the four
platforms (support.fuzz.TARGETS; Recurly's API is the local fake, seeded with the fixtures), served
in-process (TestClient) or by a real uvicorn server on a loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from billops.app import create_app
from billops.runtime import Runtime
from support import fuzz


@pytest.fixture
def fuzz_runtime(database_url: str, settings_factory: Any, runtime_factory: Any) -> Iterator[Runtime]:
    from support.recurly_api import FakeRecurlyAPI

    with FakeRecurlyAPI() as recurly:
        recurly.seed_fixtures()
        settings = settings_factory(database_url, **fuzz.target_settings(recurly.api_key, recurly.url))
        yield runtime_factory(settings)


@pytest.fixture
def fuzz_client(fuzz_runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(fuzz_runtime.settings, manage_runtime=False)) as client:
        yield client


@pytest.fixture
def fuzz_server(fuzz_runtime: Runtime) -> Iterator[tuple[str, int]]:
    """(host, port) of a real uvicorn server (h11, keep-alive on) serving the app."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    app = create_app(fuzz_runtime.settings, manage_runtime=False)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_keep_alive=30)
    )
    thread = threading.Thread(target=server.run, name="fuzz-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the uvicorn server did not start")
        time.sleep(0.05)
    yield "127.0.0.1", port
    server.should_exit = True
    thread.join(10)
