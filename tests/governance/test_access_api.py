"""API access through the real app: bearer API tokens (missing, malformed, wrong, expired, revoked, user
revoked → the same 401 "invalid or expired token" with a challenge, and no argon2 work), roles (403 below
the route's least role), /api/me, and the admin routes for users and tokens (audited with the calling
admin's name, the plain token shown once)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from billops.app import create_app
from billops.governance import audit, token_secrets
from billops.store.models import ApiToken, AuditRecord, User
from support.auth import bearer, make_user, token_for


class Api:
    def __init__(self, client: TestClient, rt: Any) -> None:
        self.client, self.rt = client, rt

    def get(self, path: str, token: str | None = None, **kw: Any) -> Any:
        return self.client.get(path, headers=bearer(token) if token else {}, **kw)

    def post(self, path: str, token: str | None = None, **kw: Any) -> Any:
        return self.client.post(path, headers=bearer(token) if token else {}, **kw)


@pytest.fixture
def api(database_url: str, settings_factory: Any, runtime_factory: Any) -> Iterator[Api]:
    settings = settings_factory(database_url, token_max_days=400)
    rt = runtime_factory(settings)
    with TestClient(create_app(settings, manage_runtime=False)) as client:
        yield Api(client, rt)


# ---------------------------------------------------------------- 401: who are you?


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "bo_1_abc"])
def test_no_bearer_token_is_401_with_a_challenge(api: Api, header: str | None) -> None:
    r = api.client.get("/api/status", headers={} if header is None else {"Authorization": header})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="billops"'
    assert "needs an API token" in r.json()["detail"]


def answer(r: Any) -> tuple[int, Any, str | None, str | None]:
    return r.status_code, r.json(), r.headers.get("www-authenticate"), r.headers.get("retry-after")


@pytest.mark.parametrize(
    "token",
    ["nonsense", "bo_12_short", "bo_999999_" + "s" * 43, "bo_0_" + "s" * 43, "bo_999999999999_" + "s" * 43],
)
def test_malformed_or_unknown_token_is_401(api: Api, token: str) -> None:
    r = api.get("/api/status", token)
    assert r.status_code == 401 and r.json()["detail"] == "invalid or expired token"
    assert r.headers["www-authenticate"] == 'Bearer realm="billops", error="invalid_token"'


def test_no_token_error_tells_whether_a_token_exists_and_none_costs_argon2(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown id, wrong secret on a real id, revoked, expired, user revoked: the same status, body and
    headers, and not one argon2 check (the cost of each is a keyed hash: microseconds)."""
    argon2: list[str] = []
    real = token_secrets._verify_argon2

    def counting(stored: str, secret: str) -> bool:
        argon2.append(stored)
        return real(stored, secret)

    monkeypatch.setattr(token_secrets, "_verify_argon2", counting)
    good = token_for(api.rt, "admin")
    revoked, expired = token_for(api.rt, "viewer"), token_for(api.rt, "viewer")
    orphan_user = make_user(api.rt, "viewer")
    orphan = token_for(api.rt, "viewer", username=orphan_user)
    tid = lambda plain: int(plain.split("_", 2)[1])  # noqa: E731
    assert api.post(f"/api/tokens/{tid(revoked)}/revoke", good).status_code == 200
    assert api.post(f"/api/users/{orphan_user}/revoke", good).status_code == 200
    with api.rt.db.session() as s:  # time passes for one token: its expiry is now behind us
        s.execute(
            sa.update(ApiToken)
            .where(ApiToken.id == tid(expired))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    cases = {
        "unknown id": "bo_999999_" + "w" * 43,
        "wrong secret on a real id": f"bo_{tid(good)}_" + "w" * 43,
        "revoked": revoked,
        "expired": expired,
        "user revoked": orphan,
        "id past any integer": "bo_9223372036854775808_" + "w" * 43,
    }
    answers = {why: answer(api.get("/api/me", plain)) for why, plain in cases.items()}
    first = answers["unknown id"]
    assert first[0] == 401 and first[1]["detail"] == "invalid or expired token", first
    for why, got in answers.items():
        assert got == first, why
    assert argon2 == [], "no unauthenticated request may spend argon2"
    assert api.get("/api/me", good).status_code == 200 and argon2 == []


def test_me_and_last_use(api: Api) -> None:
    from billops.governance import users

    users._touched.clear()  # token ids repeat across the tests' fresh databases; a process has one
    plain = token_for(api.rt, "operator", username=make_user(api.rt, "operator", username="olga"))
    r = api.get("/api/me", plain)
    assert r.status_code == 200
    tid = int(plain.split("_", 2)[1])
    assert r.json() == {"username": "olga", "role": "operator", "via": f"token:{tid}"}
    with api.rt.db.reader() as s:
        assert s.get(ApiToken, tid).last_used_at is not None


# ---------------------------------------------------------------- 403: not enough


def test_a_viewer_cannot_approve_or_reject_an_operator_can(api: Api) -> None:
    viewer, operator = token_for(api.rt, "viewer"), token_for(api.rt, "operator")
    for action, body in (("approve", {"why": "looks right"}), ("reject", {"why": "no"})):
        r = api.post(f"/api/approvals/12345/{action}", viewer, json=body)
        assert r.status_code == 403
        assert "has role viewer; this route needs operator or higher" in r.json()["detail"]
        r = api.post(f"/api/approvals/12345/{action}", operator, json=body)
        assert r.status_code == 404, r.text  # past the role check: no such approval
    assert api.get("/api/approvals", viewer).status_code == 200


def test_reject_needs_a_reason(api: Api) -> None:
    r = api.post("/api/approvals/12345/reject", token_for(api.rt, "operator"), json={})
    assert r.status_code == 422


def test_user_admin_routes_need_admin(api: Api) -> None:
    operator = token_for(api.rt, "operator")
    for method, path, body in (
        ("GET", "/api/users", None),
        ("POST", "/api/users", {"username": "x", "role": "viewer"}),
        ("POST", "/api/users/x/revoke", None),
        ("POST", "/api/users/x/tokens", {"name": "ci", "days": 1}),
        ("GET", "/api/tokens", None),
        ("POST", "/api/tokens/1/revoke", None),
    ):
        r = api.client.request(method, path, headers=bearer(operator), json=body)
        assert r.status_code == 403, (method, path, r.text)
    with api.rt.db.reader() as s:
        assert s.scalar(sa.select(User.id).where(User.username == "x")) is None


# ---------------------------------------------------------------- users and tokens through the API


def test_admin_manages_users_and_tokens(api: Api) -> None:
    admin = token_for(api.rt, "admin", username=make_user(api.rt, "admin", username="root"))

    r = api.post("/api/users", admin, json={"username": "pat", "role": "operator", "password": "x" * 12})
    assert r.status_code == 201, r.text
    assert r.json()["role"] == "operator" and r.json()["console_login"] is True
    assert r.json()["created_by"] == "root"
    r = api.post("/api/users", admin, json={"username": "ci", "role": "viewer"})
    assert r.status_code == 201 and r.json()["console_login"] is False

    r = api.post("/api/users/ci/tokens", admin, json={"name": "ci", "days": 30})
    assert r.status_code == 201, r.text
    issued = r.json()
    plain = issued.pop("token")
    assert plain.startswith(f"bo_{issued['id']}_") and issued["username"] == "ci"
    assert api.get("/api/me", plain).json()["username"] == "ci"

    listed = api.get("/api/tokens", admin)
    assert listed.status_code == 200
    assert plain.split("_", 2)[2] not in listed.text and "token_hash" not in listed.text
    mine = [t for t in listed.json() if t["id"] == issued["id"]]
    assert mine and mine[0]["name"] == "ci" and mine[0]["revoked_at"] is None
    assert [t["username"] for t in api.get("/api/tokens", admin, params={"username": "ci"}).json()] == ["ci"]
    users_ = {u["username"]: u for u in api.get("/api/users", admin).json()}
    assert users_["ci"]["active_tokens"] == 1 and users_["pat"]["role"] == "operator"
    assert "password" not in api.get("/api/users", admin).text

    # Revoking the token: it stops at once; a second revoke is a clear 409.
    r = api.post(f"/api/tokens/{issued['id']}/revoke", admin)
    assert r.status_code == 200 and r.json()["revoked_at"]
    assert api.get("/api/me", plain).status_code == 401
    r = api.post(f"/api/tokens/{issued['id']}/revoke", admin)
    assert r.status_code == 409 and "already revoked" in r.json()["error"]

    # Revoking the user: every token of theirs stops at once.
    pat_token = api.post("/api/users/pat/tokens", admin, json={"name": "laptop", "days": 1}).json()["token"]
    assert api.get("/api/me", pat_token).status_code == 200
    r = api.post("/api/users/pat/revoke", admin)
    assert r.status_code == 200 and r.json()["revoked_at"]
    r = api.get("/api/me", pat_token)
    assert r.status_code == 401 and r.json()["detail"] == "invalid or expired token"

    with api.rt.db.reader() as s:
        rows = list(s.scalars(sa.select(AuditRecord).where(AuditRecord.actor == "root")))
        assert audit.verify(s).ok
    assert [r.action for r in rows] == [
        "user.created",
        "user.created",
        "token.issued",
        "token.revoked",
        "token.issued",
        "user.revoked",
    ]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"username": "dup", "role": "viewer"}, 409, "user 'dup' already exists"),
        ({"username": "new", "role": "boss"}, 422, "role"),
        ({"username": "new", "role": "viewer", "password": "short"}, 422, "at least 12 characters"),
        ({"username": "new user", "role": "viewer"}, 422, "letters, digits"),
        ({"role": "viewer"}, 422, "username"),
    ],
)
def test_bad_user_requests_say_what_is_wrong(
    api: Api, body: dict[str, Any], status: int, message: str
) -> None:
    admin = token_for(api.rt, "admin")
    make_user(api.rt, "viewer", username="dup")
    r = api.post("/api/users", admin, json=body)
    assert r.status_code == status and message in r.text, r.text
    with api.rt.db.reader() as s:
        assert s.scalar(sa.select(User.id).where(User.username == "new")) is None


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/api/users/ghost/tokens", {"name": "ci", "days": 1}, 404, "no user 'ghost'"),
        ("/api/users/ghost/revoke", None, 404, "no user 'ghost'"),
        ("/api/tokens/424242/revoke", None, 404, "no token 424242"),
        ("/api/users/svc/tokens", {"name": "ci", "days": 401}, 422, "between a moment and 400 days"),
        ("/api/users/svc/tokens", {"name": "ci", "days": 0}, 422, "days"),
        ("/api/users/svc/tokens", {"name": "", "days": 1}, 422, "name"),
    ],
)
def test_bad_token_requests_say_what_is_wrong(
    api: Api, path: str, body: dict[str, Any] | None, status: int, message: str
) -> None:
    admin = token_for(api.rt, "admin")
    make_user(api.rt, "viewer", username="svc")
    r = api.post(path, admin, json=body)
    assert r.status_code == status and message in r.text, r.text


def test_the_last_admin_cannot_be_revoked(api: Api) -> None:
    admin = token_for(api.rt, "admin", username=make_user(api.rt, "admin", username="only-admin"))
    r = api.post("/api/users/only-admin/revoke", admin)
    assert r.status_code == 409 and "last active admin" in r.json()["error"]
    assert api.get("/api/me", admin).status_code == 200
    api.post("/api/users", admin, json={"username": "second", "role": "admin"})
    assert api.post("/api/users/only-admin/revoke", admin).status_code == 200
    assert api.get("/api/me", admin).status_code == 401  # revoked itself: its token stopped at once
