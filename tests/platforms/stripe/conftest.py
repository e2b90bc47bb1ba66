"""Fixtures for the Stripe client tests: one localstripe process per test session (a separate process:
localstripe is GPL and never imported here) and a recording proxy in front of it per test.

`tests/` has no __init__.py and tests/conftest.py belongs to the suite as a whole, so the shared
helpers in tests/support are made importable by putting `tests/` on sys.path here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from billops.platforms.stripe.client import StripePlatformClient
from support.localstripe import API_KEY, run_localstripe, sdk_client
from support.recording_proxy import RecordingProxy


@pytest.fixture(scope="session")
def localstripe_url() -> Iterator[str]:
    with run_localstripe() as url:
        yield url


@pytest.fixture
def proxy(localstripe_url: str) -> Iterator[RecordingProxy]:
    with RecordingProxy(localstripe_url) as p:
        yield p


@pytest.fixture
def sdk(localstripe_url: str):  # type: ignore[no-untyped-def]
    """The plain SDK, straight to localstripe: for seeding and for checking what a write did."""
    return sdk_client(localstripe_url)


@pytest.fixture
def client(proxy: RecordingProxy) -> StripePlatformClient:
    """The client under test, through the recording proxy (no SDK retries, so requests are countable)."""
    return StripePlatformClient(API_KEY, proxy.url, max_network_retries=0)
