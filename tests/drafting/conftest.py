"""A started BillOps runtime (SQLite; PostgreSQL too when one answers) with an LLM drafting policy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import billops.drafting.service  # noqa: F401  (the agents' DBOS steps exist before DBOS launches)
from billops.config import Settings
from billops.drafting import llm
from billops.runtime import Runtime


@pytest.fixture
def rt(
    database_url: str,
    settings_factory: Callable[..., Settings],
    runtime_factory: Callable[[Settings], Runtime],
    make_policy: Callable[..., Path],
) -> Runtime:
    policy = make_policy(drafting={"backend": {"recovery": "llm"}, "daily_token_budget": 5000})
    return runtime_factory(settings_factory(database_url, policy_file=policy))


@pytest.fixture(autouse=True)
def _no_leftover_model() -> Iterator[None]:
    yield
    llm.set_model(None)
