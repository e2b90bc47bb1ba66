"""The shadow backtest over HTTP: GET /api/recovery/backtest (auth, bad input 4xx) and /console/backtest."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from billops.app import create_app
from billops.governance.users import create_user
from support.auth import bearer, token_for

PASSWORD = "correct-horse-battery"


@pytest.fixture
def client(tmp_path: Any, settings_factory: Any, runtime_factory: Any) -> Any:
    settings = settings_factory(f"sqlite:///{tmp_path / 'b.db'}")
    rt = runtime_factory(settings)
    with rt.db.session() as s:
        create_user(s, "vera", "viewer", PASSWORD, by="test")
    c = TestClient(create_app(settings, manage_runtime=False), follow_redirects=False)
    c.viewer = bearer(token_for(rt, "viewer"))  # type: ignore[attr-defined]
    return c


def test_api_needs_a_token_and_answers_4xx_on_bad_dates(client: Any) -> None:
    assert client.get("/api/recovery/backtest?since=2026-01-01").status_code == 401
    h = client.viewer
    for q in (
        "since=2026-13-01",
        "since=yesterday",
        "since=2026-05-01&until=2026-04-01",
        "since=2020-01-01&until=2026-01-01",
        "",
    ):
        r = client.get(f"/api/recovery/backtest?{q}", headers=h)
        assert r.status_code == 422, (q, r.text)
        assert r.json()["error"]
    ok = client.get("/api/recovery/backtest?since=2026-01-01&until=2026-02-01", headers=h)
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["invoices"] == 0 and body["model"].startswith("rules-v1") and "estimate" in body["caveat"]


def test_console_page_renders_and_says_what_is_wrong(client: Any) -> None:
    import re

    page = client.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = client.post(
        "/console/login", data={"username": "vera", "password": PASSWORD, "csrf": csrf, "next": "/console"}
    )
    assert r.status_code == 303, r.text
    ok = client.get("/console/backtest?since=2026-01-01&until=2026-02-01")
    assert ok.status_code == 200 and "Shadow backtest" in ok.text and "rules-v1" in ok.text
    assert 'href="/console/backtest"' in ok.text
    bad = client.get("/console/backtest?since=2026-13-01")
    assert bad.status_code == 422 and "not a date" in bad.text
