"""Hostile webhook requests against every route of the four platforms (support.fuzz.TARGETS), on
SQLite and PostgreSQL, checking the answers and then the database: never a 5xx; every rejection a 4xx
that says why; nothing stored from a forged, stale, unauthenticated or malformed request; every valid
event stored exactly once with each delivery counted; a workflow for each known type and none for an
unknown one. And one persistent HTTP/1.1 connection to a real uvicorn server survives every 4xx."""

from __future__ import annotations

import http.client
import itertools
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billops.runtime import Runtime
from support import fuzz

# The server's own threads (DBOS, the workflows) use the `random` module while hypothesis draws; it
# warns about that although the draws do not depend on it.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")

TARGETS = list(fuzz.TARGETS.values())
_BODY_CLASSES = {  # class -> the reason the answer must give
    "deep_member": "levels deep", "deep_body": "levels deep", "deep_object": "levels deep",
    "utf16": "not UTF-8", "utf8_bom": "byte-order mark", "invalid_utf8": "not UTF-8",
    "raw_surrogate": "not UTF-8", "surrogate_id": "lone surrogate", "surrogate_member": "lone surrogate",
    "surrogate_key": "lone surrogate", "nul_id": "NUL character", "nul_member": "NUL character",
    "nul_raw": "NUL character", "nan": "not a JSON number", "huge_float": "too large",
    "huge_int": "not valid JSON", "not_json": "not valid JSON", "empty": "not valid JSON",
}  # fmt: skip
_FIELD_CLASSES = {"long_id": "event id is", "long_type": "event type is", "control_id": "control character"}


def send(client: TestClient, req: fuzz.Request) -> tuple[int, Any]:
    r = client.post(
        req.target.url, content=req.body, headers={"content-type": "application/json", **req.headers}
    )
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, None


def database(rt: Runtime, ledger: fuzz.Ledger) -> dict[str, Any]:
    with rt.db.engine.connect() as conn:
        return fuzz.check_inbox(conn, ledger)


def test_every_hostile_class_on_every_route(fuzz_client: TestClient, fuzz_runtime: Runtime) -> None:
    ledger, sent, ids = fuzz.Ledger(), [], itertools.count()
    for target in TARGETS:
        for cls in fuzz.CLASSES:
            req = fuzz.build(target, cls, f"{cls}-{target.name}-{next(ids)}", n=next(ids))
            status, answer = send(fuzz_client, req)
            assert fuzz.answer_ok(req, status, answer) is None, (target.name, cls, status, answer)
            ledger.record(req)
            if cls in fuzz.VALID:
                sent.append(req)
            reason = (answer or {}).get("error", "")
            if cls in _BODY_CLASSES:
                assert _BODY_CLASSES[cls] in reason, (target.name, cls, reason)
                # a Zuora template that signs body fields cannot authenticate a body it cannot read
                assert status == (401 if target.name == "zuora_fields" else 400), (target.name, cls, status)
                if target.name == "zuora_fields":
                    assert "cannot check" in reason
            elif cls in _FIELD_CLASSES:
                assert status == 400 and _FIELD_CLASSES[cls] in reason, (target.name, cls, reason)
            elif cls == "oversized":
                assert status == 413 and "limit" in reason
            elif cls in fuzz.FORGED:
                assert status in (400, 401), (target.name, cls, status)
    for req in sent:  # every valid event delivered again: counted, not stored again
        again = fuzz.resend(req)
        status, answer = send(fuzz_client, again)
        assert fuzz.answer_ok(again, status, answer) is None, (req.target.name, req.cls, status, answer)
        ledger.record(again)

    figures = database(fuzz_runtime, ledger)
    assert figures["problems"] == []
    assert figures["stored_forgeries_or_malformed"] == 0 and figures["workflows_for_unknown_types"] == 0
    assert figures["valid_stored_once"] == figures["valid_sent"] == len(TARGETS) * len(fuzz.VALID)


_ids = itertools.count()
requests = st.lists(
    st.tuples(
        st.sampled_from([t.name for t in TARGETS]),
        st.sampled_from([*fuzz.CLASSES, "replay", "replay"]),
        st.integers(min_value=0, max_value=10**6),
    ),
    min_size=4,
    max_size=16,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(batch=requests)
def test_random_hostile_sequences_leave_only_valid_events(
    fuzz_client: TestClient, fuzz_runtime: Runtime, batch: list[tuple[str, str, int]]
) -> None:
    """Random mixes of valid, replayed and hostile requests to random routes (a few hundred per run);
    after each mix the database holds exactly what the valid requests sent, across all mixes so far."""
    state = _state(fuzz_runtime)
    ledger, sent = state["ledger"], state["sent"]
    for name, cls, n in batch:
        if cls == "replay":
            if not sent:
                continue
            req = fuzz.resend(sent[n % len(sent)])
        else:
            req = fuzz.build(fuzz.TARGETS[name], cls, f"{cls}-{name}-h{next(_ids)}", n=n)
        status, answer = send(fuzz_client, req)
        assert fuzz.answer_ok(req, status, answer) is None, (name, cls, status, answer)
        ledger.record(req)
        if cls in fuzz.VALID:
            sent.append(req)
    figures = database(fuzz_runtime, ledger)
    assert figures["problems"] == [], figures["problems"][:5]


_STATES: dict[str, dict[str, Any]] = {}


def _state(rt: Runtime) -> dict[str, Any]:
    """The ledger shared by the examples of one test run (they share the runtime and its database)."""
    return _STATES.setdefault(rt.settings.executor_id, {"ledger": fuzz.Ledger(), "sent": []})


# ----------------------------------------------------------------------------- keep-alive


def _post(conn: http.client.HTTPConnection, req: fuzz.Request) -> tuple[int, Any, http.client.HTTPResponse]:
    conn.request(
        "POST", req.target.url, body=req.body, headers={"content-type": "application/json", **req.headers}
    )
    resp = conn.getresponse()
    raw = resp.read()
    return resp.status, json.loads(raw) if raw else None, resp


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_4xx_never_closes_the_keep_alive_connection(
    fuzz_server: tuple[str, int], fuzz_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One HTTP/1.1 connection to a real uvicorn server: every hostile class on every route, each
    followed by a valid event, all on the same socket; an unexpected error inside the route (here an
    injected one) is answered 500 on the same connection too, and the next request still succeeds."""
    host, port = fuzz_server
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.connect()
    sock, ids, ledger = conn.sock, itertools.count(), fuzz.Ledger()
    try:
        for target in TARGETS:
            for cls in [*fuzz.HOSTILE, *fuzz.FORGED]:
                for req in (
                    fuzz.build(target, cls, f"{cls}-{target.name}-k{next(ids)}", n=next(ids)),
                    fuzz.build(target, "valid", f"valid-{target.name}-k{next(ids)}", n=next(ids)),
                ):
                    status, answer, resp = _post(conn, req)
                    assert fuzz.answer_ok(req, status, answer) is None, (target.name, cls, status, answer)
                    assert not resp.will_close and conn.sock is sock, (
                        f"{target.name} {cls}: connection closed"
                    )
                    ledger.record(req)

        from billops.ingest import inbox

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("injected failure")

        monkeypatch.setattr(inbox, "accept", broken)
        req = fuzz.build(fuzz.TARGETS["stripe"], "valid", f"valid-stripe-k{next(ids)}")
        status, answer, resp = _post(conn, req)
        assert status == 500 and "nothing stored" in answer["error"] and answer["code"] == "internal_error"
        assert not resp.will_close and conn.sock is sock
        monkeypatch.undo()
        status, answer, resp = _post(conn, req)
        assert status == 200 and answer["status"] == "accepted" and conn.sock is sock
        ledger.record(req)
    finally:
        conn.close()
    assert database(fuzz_runtime, ledger)["problems"] == []


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("cus_" + "x" * 300, "subscription.customer_id is 304 characters long; at most 255 are accepted"),
        (
            "cus_\x7f1",
            "subscription.customer_id contains the control character U+007F, which is not accepted",
        ),
        ("   ", "subscription.customer_id is blank"),
    ],
)
def test_object_ids_are_bounded_like_event_ids(
    fuzz_client: TestClient, fuzz_runtime: Runtime, value: str, reason: str
) -> None:
    """The ids the mirror stores are checked with the event's, before the transaction: the same 400 on
    SQLite (which would store them) and PostgreSQL (which would fail mid-transaction)."""
    target = fuzz.TARGETS["stripe"]
    payload = fuzz.base_payload(target, "objectid-1")  # customer.subscription.updated
    payload["data"]["object"]["customer"] = value
    body = json.dumps(payload).encode()
    req = fuzz.Request(
        target, "object_id", "objectid-1", body, fuzz.auth_headers(target, body, payload), "rejected"
    )
    status, answer = send(fuzz_client, req)
    assert (status, answer["error"]) == (400, reason)
    assert database(fuzz_runtime, fuzz.Ledger())["stored"] == 0
