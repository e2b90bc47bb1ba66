"""A live console: the real app served by uvicorn on a free loopback port, with a real runtime and DBOS
(assist mode, so a failed payment waits for a human), three users, and a way to post Stripe webhooks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn

from billops.app import create_app
from billops.governance.users import create_user
from web.live import PASSWORD, Live, free_port


@pytest.fixture
def live_console_factory(
    database_url: str, settings_factory: Any, runtime_factory: Any, make_policy: Callable[..., Any]
) -> Iterator[Callable[..., Live]]:
    """start(recovery={policy overrides}, **settings) -> Live; one server per test."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(recovery: dict[str, Any] | None = None, **settings_kw: Any) -> Live:
        policy = make_policy(
            modes={"recovery": "assist"}, recovery={"context_wait_seconds": 1, **(recovery or {})}
        )
        settings = settings_factory(database_url, policy_file=policy, **settings_kw)
        rt = runtime_factory(settings)
        with rt.db.session() as s:
            for name, role in (("ada", "admin"), ("otto", "operator"), ("vera", "viewer")):
                create_user(s, name, role, PASSWORD, by="test")
        port = free_port()
        app = create_app(settings, manage_runtime=False)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the console server did not start")
            time.sleep(0.05)
        return Live(url=f"http://127.0.0.1:{port}", rt=rt)

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def live_console(live_console_factory: Callable[..., Live]) -> Live:
    return live_console_factory()
