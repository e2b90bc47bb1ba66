"""Fixtures for the mirror sync tests: a localstripe process of their own (flushed before each test,
so counts are exact), a recording proxy, and a migrated SQLite database per test.

tests/support is made importable by putting `tests/` on sys.path (tests/ has no __init__.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from billops.platforms.stripe.client import StripePlatformClient
from billops.store import Database
from billops.store.models import Base
from support.localstripe import API_KEY, flush, run_localstripe, sdk_client
from support.recording_proxy import RecordingProxy


@pytest.fixture(scope="session")
def sync_localstripe_url() -> Iterator[str]:
    with run_localstripe() as url:
        yield url


@pytest.fixture
def stripe_url(sync_localstripe_url: str) -> str:
    flush(sync_localstripe_url)
    return sync_localstripe_url


@pytest.fixture
def sdk(stripe_url: str):  # type: ignore[no-untyped-def]
    return sdk_client(stripe_url)


@pytest.fixture
def proxy(stripe_url: str) -> Iterator[RecordingProxy]:
    with RecordingProxy(stripe_url) as p:
        yield p


@pytest.fixture
def client(proxy: RecordingProxy) -> StripePlatformClient:
    return StripePlatformClient(API_KEY, proxy.url, max_network_retries=0)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'billops.db'}")
    database.migrate()
    Base.metadata.create_all(database.engine)  # no-op once the migrations create every table
    yield database
    database.dispose()
