"""Every route of the real app has a declared least role, and the app enforces it.

ROUTES below is the single table of who may call what. The test fails when the app has a route the table
does not list, or the table lists a route the app does not have, so a new route cannot ship without a
decision about its access. For each /api route and each caller (no token, viewer, operator, admin) the
request is made through the real app: no token → 401, a role below the least one → 403, the least role
or a higher one → past the role check (a 404/409/422 for a made-up id or body is fine). The webhook
routes take only the platforms' own authentication: an admin's bearer token opens none of them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Mount

from billops.app import create_app
from billops.governance.access import ApiRoute
from billops.governance.users import RANK
from billops.store.models import ContactOptOut, InboxEvent
from support.auth import bearer, token_for

FIXTURES = Path(__file__).parent / "fixtures"

# (method, path) -> least role ("viewer" | "operator" | "admin"), or:
#   "public"  no authentication (health, metrics, the OpenAPI schema and its docs pages)
#   "webhook" the platform's own authentication only (signature / HTTP Basic / HMAC per endpoint)
#   "console" a console session cookie with CSRF on forms (web/, tested in tests/web/)
#   "signed"  a signed token in the path is the only authority (one-click unsubscribe links)
ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/openapi.json"): "public",
    ("GET", "/docs"): "public",
    ("GET", "/docs/oauth2-redirect"): "public",
    ("GET", "/redoc"): "public",
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    ("GET", "/metrics"): "public",
    ("POST", "/webhooks/stripe/{endpoint}"): "webhook",
    ("POST", "/webhooks/chargebee/{endpoint}"): "webhook",
    ("POST", "/webhooks/recurly/{endpoint}"): "webhook",
    ("POST", "/webhooks/zuora/{endpoint}"): "webhook",
    ("GET", "/unsubscribe/{token}"): "signed",
    ("POST", "/unsubscribe/{token}"): "signed",
    ("GET", "/api/optouts"): "viewer",
    ("POST", "/api/optouts"): "operator",
    ("POST", "/api/optouts/remove"): "operator",
    ("GET", "/api/me"): "viewer",
    ("GET", "/api/status"): "viewer",
    ("GET", "/api/decisions"): "viewer",
    ("GET", "/api/decisions/{workflow_id}"): "viewer",
    ("GET", "/api/approvals"): "viewer",
    ("GET", "/api/approvals/{ref}"): "viewer",
    ("POST", "/api/approvals/{ref}/approve"): "operator",
    ("POST", "/api/approvals/{ref}/reject"): "operator",
    ("GET", "/api/policy"): "viewer",
    ("PUT", "/api/policy"): "admin",
    ("GET", "/api/policy/explain"): "viewer",
    ("GET", "/api/controls"): "viewer",
    ("POST", "/api/controls/pause-all"): "admin",
    ("POST", "/api/controls/resume-all"): "admin",
    ("POST", "/api/controls/breaker/reset"): "admin",
    ("GET", "/api/feedback"): "viewer",
    ("GET", "/api/kpis"): "viewer",
    ("GET", "/api/recovery/backtest"): "viewer",
    ("GET", "/api/users"): "admin",
    ("POST", "/api/users"): "admin",
    ("POST", "/api/users/{username}/revoke"): "admin",
    ("POST", "/api/users/{username}/tokens"): "admin",
    ("GET", "/api/tokens"): "admin",
    ("POST", "/api/tokens/{token_id}/revoke"): "admin",
    ("GET", "/api/workflows"): "viewer",
    ("GET", "/api/workflows/{workflow_id}"): "viewer",
    ("POST", "/api/workflows/{workflow_id}/resume"): "operator",
    ("MOUNT", "/console/static"): "console",
    ("GET", "/console/login"): "console",
    ("POST", "/console/login"): "console",
    ("POST", "/console/logout"): "console",
    ("GET", "/console"): "console",
    ("GET", "/console/approvals"): "console",
    ("GET", "/console/approvals/{ref}"): "console",
    ("POST", "/console/approvals/{ref}/approve"): "console",
    ("POST", "/console/approvals/{ref}/reject"): "console",
    ("POST", "/console/approvals/{ref}/edit"): "console",
    ("GET", "/console/decisions/{workflow_id}"): "console",
    ("GET", "/console/audit"): "console",
    ("GET", "/console/audit/export"): "console",
    ("GET", "/console/policy"): "console",
    ("POST", "/console/controls/{what}"): "console",
    ("GET", "/console/users"): "console",
    ("POST", "/console/users/add"): "console",
    ("POST", "/console/users/{username}/revoke"): "console",
    ("POST", "/console/tokens/issue"): "console",
    ("POST", "/console/tokens/{token_id}/revoke"): "console",
    ("GET", "/console/workflows"): "console",
    ("GET", "/console/backtest"): "console",
    ("GET", "/console/workflows/{workflow_id}"): "console",
    ("POST", "/console/workflows/{workflow_id}/resume"): "console",
}

# Values for path parameters and request bodies that pass validation where they can; an id that does not
# exist answers 404 after the role check, which is what the loop needs.
PATH_VALUES = {
    "workflow_id": "stripe:evt_not_here",
    "ref": "987654",
    "username": "nobody-here",
    "token_id": "987654",
    "endpoint": "default",
    "token": "WyJzdHJpcGUiLCJjdXNfeCIsImVtYWlsIl0.forged-signature",
}
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/approvals/{ref}/approve"): {"why": "checked the customer's history"},
    ("POST", "/api/approvals/{ref}/reject"): {"why": "customer asked us to wait"},
    ("PUT", "/api/policy"): {"text": "version: [not a policy"},  # refused by validation: nothing replaced
    ("POST", "/api/controls/pause-all"): {"why": "route-table test"},
    ("POST", "/api/controls/resume-all"): {"why": "route-table test"},
    ("POST", "/api/controls/breaker/reset"): {"why": "route-table test"},
    ("POST", "/api/users"): lambda: {"username": f"u-{uuid.uuid4().hex[:8]}", "role": "viewer"},
    ("POST", "/api/users/{username}/tokens"): {"name": "ci", "days": 1},
}
CALLERS = (None, "viewer", "operator", "admin")


def app_routes(app: Any) -> dict[tuple[str, str], Any]:
    """(method, path) -> the route context, for every route the app serves (HEAD follows GET)."""
    found: dict[tuple[str, str], Any] = {}
    for rc in iter_route_contexts(app.routes):
        if isinstance(rc.original_route, Mount):
            found[("MOUNT", rc.original_route.path)] = rc
            continue
        for method in rc.methods or ():
            if method != "HEAD":
                found[(method, str(rc.path_format))] = rc
    return found


def required_roles(dependant: Any) -> list[str]:
    """Every `require_role(...)` in a route's dependency tree (route, router and parameter dependencies)."""
    roles = []
    for dep in dependant.dependencies:
        if (role := getattr(dep.call, "required_role", None)) is not None:
            roles.append(role)
        roles.extend(required_roles(dep))
    return roles


@pytest.fixture
def app() -> Any:
    return create_app()


def test_the_table_lists_exactly_the_apps_routes(app: Any) -> None:
    served = set(app_routes(app))
    assert sorted(served - set(ROUTES)) == [], "routes with no declared access: add them to ROUTES"
    assert sorted(set(ROUTES) - served) == [], "ROUTES lists routes the app does not have"


def test_the_table_covers_the_openapi_schema(app: Any) -> None:
    documented = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if method.upper() in {"GET", "POST", "PUT", "PATCH", "DELETE"}
    }
    assert sorted(documented - set(ROUTES)) == []
    schema_routes = {
        key
        for key, rc in app_routes(app).items()
        if isinstance(rc.original_route, APIRoute) and rc.include_in_schema
    }
    assert documented == schema_routes
    assert all(path.startswith("/api/") for _, path in documented if ROUTES[(_, path)] in RANK)


def test_each_api_route_declares_its_least_role(app: Any) -> None:
    for key, rc in app_routes(app).items():
        want = ROUTES[key]
        if not isinstance(rc.original_route, APIRoute):
            continue
        roles = required_roles(rc.dependant)
        if want in RANK:
            assert key[1].startswith("/api/"), key
            # ApiRoute checks the token before FastAPI reads the body (governance/access.py).
            assert isinstance(rc.original_route, ApiRoute), f"{key}: use APIRouter(route_class=ApiRoute)"
            assert roles, f"{key}: no require_role dependency"
            assert max(roles, key=RANK.__getitem__) == want, (key, roles)
        else:
            assert roles == [], f"{key} is {want} but depends on require_role{roles}"


# ---------------------------------------------------------------- through the real app


@pytest.fixture
def client(database_url: str, settings_factory: Any, runtime_factory: Any) -> Iterator[Any]:
    settings = settings_factory(
        database_url,
        chargebee_webhook_credentials={"default": ["billops:route-table-password"]},
        recurly_webhook_keys={"default": ["recurly-route-table-key-01"]},
        zuora_webhook_endpoints={"default": {"basic": ["zuora:route-table-password"]}},
    )
    rt = runtime_factory(settings)
    with TestClient(create_app(settings, manage_runtime=False)) as c:
        c.rt = rt  # type: ignore[attr-defined]
        c.tokens = {role: token_for(rt, role) for role in RANK}  # type: ignore[attr-defined]
        yield c


def url_for(path: str) -> str:
    for name, value in PATH_VALUES.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no value for a path parameter of {path}: add it to PATH_VALUES"
    return path


def test_every_api_route_enforces_its_role(client: Any) -> None:
    checked = 0
    for (method, path), least in ROUTES.items():
        if least not in RANK:
            continue
        for caller in CALLERS:
            body = BODIES.get((method, path))
            body = body() if callable(body) else body
            headers = bearer(client.tokens[caller]) if caller else {}
            r = client.request(method, url_for(path), headers=headers, json=body)
            who = caller or "no token"
            if caller is None:
                assert r.status_code == 401, (method, path, who, r.text)
                assert r.headers["www-authenticate"].startswith("Bearer")
            elif RANK[caller] < RANK[least]:
                assert r.status_code == 403, (method, path, who, r.text)
                assert f"needs {least} or higher" in r.json()["detail"]
            else:
                assert r.status_code not in (401, 403), (method, path, who, r.text)
                assert r.status_code < 500, (method, path, who, r.text)
            checked += 1
    assert checked == 4 * sum(1 for role in ROUTES.values() if role in RANK)


def webhook_body(platform: str) -> bytes:
    if platform == "stripe":
        return (FIXTURES / "stripe" / "invoice.payment_failed.json").read_bytes()
    if platform == "chargebee":
        return (FIXTURES / "chargebee" / "payment_failed_insufficient_funds.json").read_bytes()
    if platform == "recurly":
        return (FIXTURES / "recurly" / "webhooks" / "payment.failed.json").read_bytes()
    return json.dumps({"event": "PaymentFailed", "timestamp": "2026-11-22T10:00:00Z"}).encode()


def test_webhooks_refuse_api_tokens_of_any_role(client: Any) -> None:
    webhooks = [path for (_, path), kind in ROUTES.items() if kind == "webhook"]
    assert len(webhooks) == 4
    for path in webhooks:
        platform = path.split("/")[2]
        for role in RANK:
            r = client.post(
                url_for(path),
                content=webhook_body(platform),
                headers={**bearer(client.tokens[role]), "Content-Type": "application/json"},
            )
            assert r.status_code in (400, 401), (path, role, r.status_code, r.text)
    with client.rt.db.reader() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(InboxEvent)) == 0


def test_signed_routes_refuse_forged_tokens_whatever_the_bearer(client: Any) -> None:
    signed = [(m, path) for (m, path), kind in ROUTES.items() if kind == "signed"]
    assert len(signed) == 2
    for method, path in signed:
        for caller in CALLERS:
            headers = bearer(client.tokens[caller]) if caller else {}
            r = client.request(method, url_for(path), headers=headers)
            assert r.status_code == 400, (method, path, caller, r.text)
            assert "not valid" in r.text
    with client.rt.db.reader() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(ContactOptOut)) == 0
