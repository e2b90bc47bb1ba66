"""The HTTP API under hostile and careless callers (docs/access.md, "API errors").

Part one, on SQLite and PostgreSQL: the inputs found by probing, each answered with a 4xx in the one
error shape, and the token check before anything reads the body. Part two (slow): schemathesis over
the app's OpenAPI, in-process against the ASGI app on a real SQLite runtime, every check and every
phase (coverage, fuzzing, stateful), once as an admin and once without a token: 0 server errors, 0
conformance failures, and every operation 401 without a token. The budget is small enough for CI;
raise it by hand with BILLOPS_SCHEMATHESIS_EXAMPLES=100 (BILLOPS_SCHEMATHESIS_SEED=<n> for another
sequence).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import sqlalchemy as sa
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from billops.app import create_app
from billops.errors import ErrorBody
from billops.governance.access import DB_INT_MAX, MAX_BODY_BYTES, ApiRoute
from billops.store.models import ApiToken, AuditRecord, ContactOptOut, User
from support.auth import bearer, token_for

ERROR_KEYS = {"error", "status", "code", "detail", "problems"}


@pytest.fixture
def api(database_url: str, settings_factory: Any, runtime_factory: Any) -> Iterator[Any]:
    """The app in-process on a real runtime (SQLite, and PostgreSQL when it answers)."""
    yield from _client(settings_factory(database_url), runtime_factory)


@pytest.fixture
def api_sqlite(tmp_path: Any, settings_factory: Any, runtime_factory: Any) -> Iterator[Any]:
    yield from _client(settings_factory(f"sqlite:///{tmp_path / 'api.db'}"), runtime_factory)


def _client(settings: Any, runtime_factory: Any) -> Iterator[Any]:
    """A client with an admin token (`client.admin`). Token ids start high, so that a fuzzed
    `POST /api/tokens/{id}/revoke` does not hit the tokens a test uses by chance."""
    rt = runtime_factory(settings)
    token_for(rt, "viewer")
    with rt.db.session() as s:  # later ids continue from here
        s.execute(sa.update(ApiToken).values(id=1_999_999_000))
    admin = token_for(rt, "admin")
    app = create_app(settings, manage_runtime=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.rt = rt  # type: ignore[attr-defined]
        client.admin = bearer(admin)  # type: ignore[attr-defined]
        yield client


def error_of(r: Any, status: int) -> dict[str, Any]:
    """The answer's error body, checked against the documented shape."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == ERROR_KEYS, body
    ErrorBody.model_validate(body)
    assert body["status"] == status and body["error"] == body["detail"] and body["error"]
    return body


# ---------------------------------------------------------------- the probes of issue 14


def test_bad_query_values_are_422_with_the_parameter_named(api: Any) -> None:
    for url, name in [
        ("/api/policy/explain?currency=12a", "currency"),
        ("/api/policy/explain?platform=paypal", "platform"),
        ("/api/policy/explain?amount_minor=99999999999999999999", "amount_minor"),
        ("/api/policy/explain?workflow=nope", "workflow"),
        ("/api/approvals?status=whatever", "status"),
        ("/api/decisions?limit=0", "limit"),
        ("/api/optouts?customer_id=a%00b", "customer_id"),
    ]:
        body = error_of(api.get(url, headers=api.admin), 422)
        assert body["code"] == "invalid_input"
        assert [p["loc"] for p in body["problems"]] == [["query", name]], (url, body)
        assert name in body["error"]
    ok = api.get("/api/policy/explain?currency=EUR&timezone=Not/AZone", headers=api.admin)
    assert ok.status_code == 200 and ok.json()["subject"]["currency"] == "eur"


def test_path_ids_beyond_the_database_integer_range_are_4xx(api: Any) -> None:
    for n in (DB_INT_MAX + 1, 9223372036854775808, 10**30):
        body = error_of(api.post(f"/api/tokens/{n}/revoke", headers=api.admin), 422)
        assert body["problems"][0]["loc"] == ["path", "token_id"]
    error_of(api.post(f"/api/tokens/{DB_INT_MAX}/revoke", headers=api.admin), 404)
    error_of(api.post("/api/tokens/0/revoke", headers=api.admin), 422)
    for ref in (str(10**30), str(DB_INT_MAX + 1)):
        error_of(api.get(f"/api/approvals/{ref}", headers=api.admin), 404)
        error_of(api.post(f"/api/approvals/{ref}/reject", json={"why": "x"}, headers=api.admin), 404)
    error_of(api.get("/api/approvals/%C2%B2", headers=api.admin), 422)  # "²" is a digit to str.isdigit
    error_of(api.get("/api/decisions/stripe:evt%00x", headers=api.admin), 422)


def test_a_policy_nested_too_deeply_is_422_and_changes_nothing(api: Any) -> None:
    before = api.get("/api/policy", headers=api.admin).json()
    for text in ("[" * 100_000, "a: " * 30_000 + "1"):
        body = error_of(api.put("/api/policy", json={"text": text}, headers=api.admin), 422)
        assert "new policy" in body["error"]
    assert api.get("/api/policy", headers=api.admin).json() == before


def test_kpi_dates_outside_the_calendar_are_422(api: Any) -> None:
    for q in ("until=0001-01-01", "since=9999-12-31&until=9999-12-31", "until=2026-W01", "until="):
        body = error_of(api.get(f"/api/kpis?{q}", headers=api.admin), 422)
        assert "date" in body["error"] or "range" in body["error"], (q, body)
    assert api.get("/api/kpis?since=2026-11-01&until=2026-11-30", headers=api.admin).status_code == 200


def test_bodies_that_are_not_json_are_400_and_bad_strings_422(api: Any) -> None:
    json_ct = {**api.admin, "Content-Type": "application/json"}
    url = "/api/controls/pause-all"
    for raw, says in [
        (b"{bad", "not valid JSON"),
        (b'{"why": NaN}', "NaN is not a JSON number"),
        ('{"why": "ok"}'.encode("utf-16"), "not UTF-8"),
        (b"[" * 5000 + b"]" * 5000, "more than 32 levels deep"),
        (b'{"why": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}", "more than 32 levels deep"),
    ]:
        body = error_of(api.post(url, content=raw, headers=json_ct), 400)
        assert says in body["error"] and body["code"] == "bad_request"
    for raw, loc, kind in [
        (b'{"why": "a\\u0000b"}', ["body", "why"], "string_nul"),
        (b'{"why": "a\\ud800b"}', ["body", "why"], "string_surrogate"),
        (b'{"why": "ok", "x": ["\\udfff"]}', ["body", "x", 0], "string_surrogate"),
    ]:
        body = error_of(api.post(url, content=raw, headers=json_ct), 422)
        assert [(p["loc"], p["type"]) for p in body["problems"]] == [(loc, kind)]
    big = b'{"why": "' + b"x" * MAX_BODY_BYTES + b'"}'
    error_of(api.post(url, content=big, headers=json_ct), 413)
    schema_bad = error_of(api.post(url, json={"why": ""}, headers=api.admin), 422)
    assert schema_bad["problems"][0]["loc"] == ["body", "why"]
    assert api.get("/api/controls", headers=api.admin).json()["kill_switch"] is None  # nothing was paused


def test_token_check_comes_before_the_body_on_every_api_route(api: Any) -> None:
    """Without a token, or with a viewer's on an admin route, the answer is 401 / 403 whatever the body
    or parameters: malformed JSON, NUL bytes, bytes that are not UTF-8, ids out of range."""
    viewer = bearer(token_for(api.rt, "viewer"))
    bodies: list[tuple[bytes, str]] = [
        (b"{bad", "application/json"),
        (b"[" * 3000, "application/json"),
        (b'{"why": "\\u0000"}', "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"x" * 100, "text/plain"),
    ]
    checked = 0
    for rc in _api_operations(api.app):
        path = rc.path_format.replace("{token_id}", "99999999999999999999").replace("{", "").replace("}", "")
        for raw, ctype in bodies:
            r = api.request(
                rc.method, path + "?limit=0&currency=%00", content=raw, headers={"Content-Type": ctype}
            )
            body = error_of(r, 401)
            assert r.headers["www-authenticate"].startswith("Bearer"), (rc.method, path)
            assert body["code"] == "unauthorized"
            if rc.role != "viewer":
                error_of(
                    api.request(rc.method, path, content=raw, headers={**viewer, "Content-Type": ctype}), 403
                )
            checked += 1
    assert checked >= 5 * 25
    with api.rt.db.reader() as s:  # nothing was written by any of them
        assert s.scalar(sa.select(sa.func.count()).select_from(ContactOptOut)) == 0
        assert s.scalar(sa.select(sa.func.count()).select_from(User)) == 3  # two of the fixture's, one viewer


@dataclass
class _Op:
    method: str
    path_format: str
    role: str


def _api_operations(app: Any) -> list[_Op]:
    from billops.governance.access import least_role

    ops = []
    for rc in iter_route_contexts(app.routes):
        if str(getattr(rc, "path_format", "")).startswith("/api/"):
            assert isinstance(rc.original_route, ApiRoute), f"{rc.path_format} is not an ApiRoute"
            role = least_role(rc.dependant)
            assert role is not None, rc.path_format
            ops += [_Op(m, str(rc.path_format), role) for m in sorted(rc.methods) if m != "HEAD"]
    return ops


def test_every_error_status_is_documented_with_the_error_model(api: Any) -> None:
    spec = api.get("/openapi.json").json()
    assert "apiToken" in spec["components"]["securitySchemes"]
    ref = "#/components/schemas/ErrorBody"
    for path, item in spec["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, op in item.items():
            codes = set(op["responses"])
            assert {"401"} <= codes, (method, path)
            assert op["security"] == [{"apiToken": []}], (method, path)
            if "requestBody" in op:
                assert {"400", "413", "422"} <= codes, (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)
            for code, answer in op["responses"].items():
                if code.startswith(("4", "5")):
                    assert answer["content"]["application/json"]["schema"] == {"$ref": ref}, (
                        method,
                        path,
                        code,
                    )
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_errors_keep_the_error_and_detail_keys_clients_read(api: Any) -> None:
    r = api.post("/api/users/nobody-here/revoke", headers=api.admin)
    body = error_of(r, 404)
    assert body == {
        "error": "no user 'nobody-here'",
        "status": 404,
        "code": "not_found",
        "detail": "no user 'nobody-here'",
        "problems": [],
    }
    r = api.delete("/api/users", headers=api.admin)
    assert error_of(r, 405)["code"] == "method_not_allowed"
    assert set(r.headers["allow"].split(", ")) - {"HEAD"} == {"GET", "POST"}  # both routes of the path
    error_of(api.get("/api/no-such-thing", headers=api.admin), 404)
    with api.rt.db.reader() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(AuditRecord)) is not None


# ---------------------------------------------------------------- schemathesis


EXAMPLES = int(os.environ.get("BILLOPS_SCHEMATHESIS_EXAMPLES", "8"))
SEED = int(os.environ.get("BILLOPS_SCHEMATHESIS_SEED", "14"))
TIMEOUT = max(300, 40 * EXAMPLES)  # seconds; CI's run takes about 20 s each


@dataclass
class Run:
    operations: set[str] = field(default_factory=set)
    requests: int = 0
    by_phase: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    admins: list[str] = field(default_factory=list)  # the admin tokens the run used, in turn
    not_found: list[str] = field(default_factory=list)  # the paths answered 404
    by_operation: dict[str, Counter[int]] = field(default_factory=dict)  # the documented method's answers
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{len(self.operations)} operations, {self.requests} requests "
            f"({dict(self.by_phase)}), statuses {dict(sorted(self.statuses.items()))}, "
            f"{len(self.failures)} failures, {len(self.errors)} errors, {self.seconds:.1f} s, "
            f"{len(self.admins)} admin tokens"
        )


# schemathesis's default rejections, and 413 (a body larger than the API takes).
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]


def run_schemathesis(app: Any, admin_of: Any | None) -> Run:
    """One schemathesis run over the /api operations; with `admin_of` (a runtime), as an admin."""
    import schemathesis
    from schemathesis.config import SchemathesisConfig
    from schemathesis.engine import events

    config: dict[str, Any] = {
        "seed": SEED,
        "workers": 1,
        # No example database: the same seed gives the same run on every machine.
        "generation": {"max-examples": EXAMPLES, "mode": "all", "database": "none"},
        "phases": {"stateful": {"max-steps": 6}},
        "checks": {
            "enabled": True,
            # What the schema cannot say is refused with 422 (a policy that does not parse, a token
            # longer than BILLOPS_TOKEN_MAX_DAYS, since after until); everything else must be accepted.
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
            },
            "negative_data_rejection": {"expected-statuses": REJECTIONS},
        },
    }
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", app, config=SchemathesisConfig.from_dict(config)
    ).include(path_regex="^/api/")
    run = Run()
    if admin_of is not None:
        current = [token_for(admin_of, "admin")]

        @schema.auth(refresh_interval=None)
        class Admin:
            """An admin token for each case. The run may revoke the one it uses (the stateful phase
            follows GET /api/tokens to POST /api/tokens/{id}/revoke, or revokes the user): then a
            new admin takes over, so the run keeps testing past validation."""

            def get(self, case: Any, ctx: Any) -> str:
                if not _still_admin(admin_of, current[-1]):
                    current.append(token_for(admin_of, "admin"))
                return current[-1]

            def set(self, case: Any, data: str, ctx: Any) -> None:
                case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

        run.admins = current
    started = time.monotonic()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            label = event.recorder.label
            if label.split(" ")[0] in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
                run.operations.add(label)
            for case_id, interaction in event.recorder.interactions.items():
                run.requests += 1
                run.by_phase[event.phase.value] += 1
                if interaction.response is not None:
                    status = interaction.response.status_code
                    run.statuses[status] += 1
                    case = event.recorder.cases[case_id].value
                    if interaction.request.method.upper() == case.operation.method.upper():
                        run.by_operation.setdefault(case.operation.label, Counter())[status] += 1
                        if status == 404:
                            run.not_found.append(unquote(urlsplit(interaction.request.uri).path))
                for check in event.recorder.checks.get(case_id, []):
                    if check.failure_info is not None:
                        f = check.failure_info.failure
                        run.failures.append(
                            f"{event.phase.value} {label} {check.name}: {f.title}: {f.message}"
                        )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            run.errors.append(repr(getattr(event, "value", None) or getattr(event, "exception", None)))
    run.seconds = time.monotonic() - started
    return run


def _still_admin(rt: Any, token: str) -> bool:
    token_id = int(token.split("_")[1])
    with rt.db.reader() as s:
        row = s.execute(
            sa.select(ApiToken.revoked_at, User.revoked_at)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.id == token_id)
        ).one()
    return row[0] is None and row[1] is None


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT)
def test_schemathesis_with_an_admin_token(api_sqlite: Any) -> None:
    api = api_sqlite
    run = run_schemathesis(api.app, api.rt)
    print(f"\nschemathesis, admin token: {run.summary()}")
    assert run.errors == []
    assert run.failures == [], "\n".join(run.failures[:20])
    assert not [s for s in run.statuses if s >= 500]
    documented = sum(
        len(ops) for p, ops in api.get("/openapi.json").json()["paths"].items() if p.startswith("/api/")
    )
    assert len(run.operations) == documented >= 29
    assert run.by_phase["stateful"] > 0 and run.by_phase["fuzzing"] > 0 and run.by_phase["coverage"] > 0
    assert run.statuses[200] + run.statuses[201] > 100  # it got past validation, not only 4xx


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT)
def test_schemathesis_without_a_token_gets_401_everywhere(api_sqlite: Any) -> None:
    api = api_sqlite
    run = run_schemathesis(api.app, None)
    print(f"\nschemathesis, no token: {run.summary()}")
    assert run.errors == []
    assert run.failures == [], "\n".join(run.failures[:20])
    documented = sum(
        len(ops) for p, ops in api.get("/openapi.json").json()["paths"].items() if p.startswith("/api/")
    )
    assert len(run.operations) == len(run.by_operation) == documented >= 29
    for op, statuses in run.by_operation.items():  # whatever the parameters and body
        assert set(statuses) - {404} == {401}, (op, statuses)
    # A 404 only where no route matches the path at all (e.g. a `{workflow_id:path}` holding a line
    # break): the router answers before any operation runs.
    routes = [rc.path_regex for rc in iter_route_contexts(api.app.routes) if hasattr(rc, "path_regex")]
    assert [p for p in run.not_found if any(r.match(p) for r in routes)] == []
    # Besides: 405 for a method the path does not serve (the router says so before any route runs).
    assert set(run.statuses) <= {401, 404, 405}, run.statuses
    assert run.statuses[401] > 500
