"""Fixtures for the channel tests: the servers themselves live in tests/support/channels.py (the delivery
end-to-end tests use them too)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from billops.config import Settings
from support.channels import (
    Reply,
    ScriptedServer,
    Smtp,
    authenticator,
    make_cert,
    running_smtp,
    server_tls,
)
from support.loopback import RecordedRequest


def make_settings(tmp_path: Path, **kw: Any) -> Settings:
    """Settings from arguments only (no environment, no .env file)."""
    return Settings(_env_file=None, data_dir=tmp_path, **kw)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def smtp_plain() -> Iterator[Smtp]:
    """A local relay: no TLS, no AUTH."""
    with running_smtp() as s:
        yield s


@pytest.fixture
def smtp_starttls(tls_cert: tuple[Path, Path]) -> Iterator[Smtp]:
    """A submission server: STARTTLS required, AUTH required and only after TLS."""
    with running_smtp(
        tls_context=server_tls(tls_cert),
        require_starttls=True,
        auth_require_tls=True,
        auth_required=True,
        authenticator=authenticator,
    ) as s:
        yield s


@pytest.fixture
def smtp_implicit_tls(tls_cert: tuple[Path, Path]) -> Iterator[Smtp]:
    """Implicit TLS (port 465 style) with AUTH."""
    # aiosmtpd only counts STARTTLS as TLS for auth_require_tls; this connection is TLS from the start.
    with running_smtp(
        ssl_context=server_tls(tls_cert),
        auth_required=True,
        auth_require_tls=False,
        authenticator=authenticator,
    ) as s:
        yield s


@pytest.fixture
def http_server() -> Iterator[Callable[[Callable[[RecordedRequest], Reply]], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def _start(responder: Callable[[RecordedRequest], Reply]) -> ScriptedServer:
        srv = ScriptedServer(responder).start()
        servers.append(srv)
        return srv

    yield _start
    for srv in servers:
        srv.stop()
