"""Hypothesis-mutated webhook payloads through every platform's real route, correctly authenticated:
never a 5xx, and a rejected request leaves the inbox exactly as it was (nothing half-written).

Each example takes one of our own valid fixtures and breaks it: a field deleted, or replaced by any
JSON value (wrong types, nulls, huge numbers, nested junk). The hostile classes (encodings, nesting,
NUL, surrogates, ids out of bounds, forgeries) are in test_hostile_webhooks.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billops.runtime import Runtime
from billops.store.models import InboxEvent
from support import fuzz

# The server's own threads (DBOS, the workflows) use the `random` module while hypothesis draws; it
# warns about that although the draws do not depend on it.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")

OK = {200, 400, 401, 404, 413, 422}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def mutated(draw: st.DrawFn, target: fuzz.Target) -> dict[str, Any]:
    doc = fuzz.base_payload(target, f"mutated-{draw(st.integers(0, 10**9))}", pick=draw(st.integers(0, 9)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        candidates = fuzz.paths(doc)
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        op = "delete" if draw(st.booleans()) else "replace"
        fuzz.mutate(doc, path, op, draw(json_values))
    return doc


def inbox_count(rt: Runtime) -> int:
    with rt.db.reader() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(InboxEvent)) or 0


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("name", list(fuzz.TARGETS))
@FUZZ
@given(data=st.data())
def test_mutated_payloads_never_5xx(
    fuzz_client: TestClient, fuzz_runtime: Runtime, name: str, data: Any
) -> None:
    target = fuzz.TARGETS[name]
    payload = data.draw(mutated(target))
    body = json.dumps(payload).encode()
    headers = fuzz.auth_headers(target, body, payload)
    before = inbox_count(fuzz_runtime)
    r = fuzz_client.post(target.url, content=body, headers={"content-type": "application/json", **headers})
    assert r.status_code in OK, (r.status_code, r.text, body[:300])
    if r.status_code != 200:
        assert r.json()["error"], "a rejection says why"
        assert inbox_count(fuzz_runtime) == before, "a rejected request stored something"
    else:
        assert inbox_count(fuzz_runtime) <= before + 1
