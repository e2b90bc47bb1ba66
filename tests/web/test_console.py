"""The console through the app's HTTP interface (TestClient): logins, lockout, sessions, CSRF on every
POST, roles, the pages and the audit export. Approvals come from real assist-mode workflows."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from billops.app import create_app
from billops.governance.control import controls
from billops.governance.users import create_user
from billops.store.models import Approval, AuditRecord, ConsoleSession, Decision, User
from support.scenario import Failure
from support.service import Service

PASSWORD = "correct-horse-battery"


@pytest.fixture
def console(
    database_url: str, settings_factory: Any, runtime_factory: Any, make_policy: Callable[..., Any]
) -> Service:
    policy = make_policy(modes={"recovery": "assist"}, recovery={"context_wait_seconds": 1})
    settings = settings_factory(database_url, policy_file=policy, login_max_failures=3)
    rt = runtime_factory(settings)
    with rt.db.session() as s:
        for name, role in (("ada", "admin"), ("otto", "operator"), ("vera", "viewer")):
            create_user(s, name, role, PASSWORD, by="test")
    return Service(TestClient(create_app(settings, manage_runtime=False), follow_redirects=False), rt)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "the page carries a CSRF field"
    return m.group(1)


def login(client: TestClient, username: str, password: str = PASSWORD, next_url: str = "/console") -> Any:
    page = client.get("/console/login")
    assert page.status_code == 200
    return client.post(
        "/console/login",
        data={"username": username, "password": password, "csrf": csrf_of(page.text), "next": next_url},
    )


def logged_in(svc: Service, username: str) -> TestClient:
    client = TestClient(svc.client.app, follow_redirects=False)
    r = login(client, username)
    assert r.status_code == 303, r.text
    return client


def session_csrf(client: TestClient, path: str = "/console") -> str:
    r = client.get(path)
    assert r.status_code == 200, r.text
    return csrf_of(r.text)


def pending_approval(svc: Service) -> tuple[str, int]:
    wf = svc.fail(Failure().events())
    svc.awaiting(wf)
    with svc.rt.db.reader() as s:
        return wf, int(s.scalar(sa.select(Approval.id).where(Approval.workflow_id == wf)))


def approval_status(svc: Service, appr_id: int) -> str:
    with svc.rt.db.reader() as s:
        return str(s.get(Approval, appr_id).status)  # type: ignore[union-attr]


def error_of(html: str) -> str:
    m = re.search(r'<p class="error" role="alert">([^<]*)</p>', html)
    assert m, "the page says what went wrong"
    return m.group(1)


def from_client(svc: Service, ip: str) -> TestClient:
    """A browser at another address (the address the app sees is what logins are throttled by)."""
    return TestClient(svc.client.app, follow_redirects=False, client=(ip, 40000))


def test_login_wrong_password_and_backoff(console: Service) -> None:
    client = TestClient(console.client.app, follow_redirects=False)
    r = client.get("/console/approvals?status=all")
    assert (
        r.status_code == 303
        and r.headers["location"] == "/console/login?next=%2Fconsole%2Fapprovals%3Fstatus%3Dall"
    )
    bad = login(client, "otto", "wrong-password-123")
    assert bad.status_code == 401 and error_of(bad.text) == "wrong username or password"
    unknown = login(client, "nobody", "wrong-password-123")
    assert unknown.status_code == 401 and error_of(unknown.text) == "wrong username or password"
    login(client, "otto", "wrong-password-123")
    third = login(client, "otto", "wrong-password-123")  # the third failure in a row from here backs off
    assert third.status_code == 401
    still = login(client, "otto")  # even the right password is refused during the back-off …
    assert still.status_code == 429 and error_of(still.text) == "too many failed logins: try again in 1 s"
    assert still.headers["retry-after"] == "1"
    for _ in range(2):
        login(client, "nobody", "wrong-password-123")
    ghost = login(client, "nobody")  # … with the same answer as for a user that does not exist
    assert (ghost.status_code, error_of(ghost.text), ghost.headers["retry-after"]) == (
        429,
        error_of(still.text),
        "1",
    )
    with console.rt.db.reader() as s:
        q = sa.select(AuditRecord.action).where(
            AuditRecord.subject == "user:otto", AuditRecord.action.like("auth.%")
        )
        assert list(s.scalars(q)) == ["auth.login_failed"]  # 3 failures, 1 sampled record
        assert s.scalar(sa.select(sa.func.count()).select_from(ConsoleSession)) == 0
    ok = login(client, "vera", next_url="/console/approvals?status=all")
    assert ok.status_code == 303 and ok.headers["location"] == "/console/approvals?status=all"
    cookie = ok.headers["set-cookie"]
    assert "billops_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # secure_cookies is off in this test
    assert client.get("/console/approvals?status=all").status_code == 200


def test_an_outsider_cannot_lock_out_the_admin(console: Service) -> None:
    attacker = from_client(console, "203.0.113.9")
    statuses = [login(attacker, "ada", f"guess-{i:04d}-password").status_code for i in range(40)]
    assert set(statuses) == {401, 429} and statuses.count(401) <= 4  # the rest answered before argon2
    admin = from_client(console, "198.51.100.7")
    assert login(admin, "ada").status_code == 303  # the real admin, from their own address, at once
    with console.rt.db.reader() as s:
        failed = s.scalar(
            sa.select(sa.func.count())
            .select_from(AuditRecord)
            .where(AuditRecord.action == "auth.login_failed", AuditRecord.subject == "user:ada")
        )
    assert failed == 1  # 40 attempts, 1 audit record (with the count)


@pytest.fixture
def small_ceiling(
    database_url: str, settings_factory: Any, runtime_factory: Any, make_policy: Callable[..., Any]
) -> Service:
    settings = settings_factory(
        database_url, login_max_failures=3, login_client_max_failures=5, login_account_max_failures=6
    )
    rt = runtime_factory(settings)
    with rt.db.session() as s:
        create_user(s, "ada", "admin", PASSWORD, by="test")
    return Service(TestClient(create_app(settings, manage_runtime=False), follow_redirects=False), rt)


def test_a_distributed_attack_slows_new_browsers_but_not_the_one_she_logged_in_with(
    small_ceiling: Service,
) -> None:
    laptop = from_client(small_ceiling, "198.51.100.7")
    first = login(laptop, "ada")
    assert first.status_code == 303 and "billops_device=" in first.headers["set-cookie"]
    laptop.post("/console/logout", data={"csrf": session_csrf(laptop)})
    for i in range(3):  # 3 addresses × 2 failures: under every per-address limit, up to the account's 6
        bot = from_client(small_ceiling, f"192.0.2.{i + 1}")
        for _ in range(2):
            assert login(bot, "ada", "wrong-password-123").status_code == 401
    phone = from_client(small_ceiling, "198.51.100.8")  # a new browser is slowed (seconds, not locked)
    slowed = login(phone, "ada")
    assert slowed.status_code == 429 and int(slowed.headers["retry-after"]) <= 30
    assert login(laptop, "ada").status_code == 303  # the laptop carries its device cookie: not slowed


def test_open_redirect_and_login_csrf(console: Service) -> None:
    client = TestClient(console.client.app, follow_redirects=False)
    r = login(client, "vera", next_url="https://evil.example/")
    assert r.status_code == 303 and r.headers["location"] == "/console"
    fresh = TestClient(console.client.app, follow_redirects=False)
    # No login CSRF cookie/token: refused, and no login is even attempted.
    r = fresh.post("/console/login", data={"username": "vera", "password": PASSWORD, "csrf": "x"})
    assert r.status_code == 403 and "CSRF" in r.text
    page = fresh.get("/console/login")
    r = fresh.post("/console/login", data={"username": "vera", "password": PASSWORD, "csrf": "forged"})
    assert r.status_code == 403
    assert csrf_of(page.text)
    with console.rt.db.reader() as s:  # only the first client's session exists
        assert s.scalar(sa.select(sa.func.count()).select_from(ConsoleSession)) == 1


def test_tampered_session_cookie_is_rejected(console: Service) -> None:
    client = logged_in(console, "ada")
    good = client.cookies.get("billops_session")
    assert good
    value, _, sig = good.rpartition(".")
    forged = TestClient(console.client.app, follow_redirects=False)
    forged.cookies.set(
        "billops_session", value + "." + ("A" if sig[0] != "A" else "B") + sig[1:], path="/console"
    )
    r = forged.get("/console/policy")
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
    assert forged.post("/console/controls/pause", data={"why": "x", "csrf": "y"}).status_code == 401
    # The cookie of another key (or an unsigned session id) does not work either.
    from itsdangerous import URLSafeTimedSerializer

    other = URLSafeTimedSerializer(b"another-key-" * 4, salt="billops-session").dumps("made-up-session-id")
    forged.cookies.set("billops_session", other, path="/console")
    assert forged.get("/console").status_code == 303
    # The key file is private to its owner.
    key = console.rt.settings.data_dir / "console.key"
    assert key.exists() and key.stat().st_mode & 0o777 == 0o600


def test_csrf_on_approve_pause_and_logout(console: Service) -> None:
    wf, appr_id = pending_approval(console)
    client = logged_in(console, "ada")
    token = session_csrf(client, f"/console/approvals/{appr_id}")
    for data, headers in (
        ({"why": "ok"}, {}),
        ({"why": "ok", "csrf": "wrong"}, {}),
        ({}, {"X-CSRF-Token": "x"}),
    ):
        r = client.post(f"/console/approvals/{appr_id}/approve", data=data, headers=headers)
        assert r.status_code == 403 and "CSRF check failed" in r.text and "Nothing was changed" in r.text
        r = client.post("/console/controls/pause", data={**data, "why": "test"}, headers=headers)
        assert r.status_code == 403
        r = client.post("/console/logout", data=data, headers=headers)
        assert r.status_code == 403
    assert approval_status(console, appr_id) == "pending"
    with console.rt.db.reader() as s:
        assert controls(s).kill_switch is None
        assert s.scalar(sa.select(sa.func.count()).select_from(ConsoleSession)) == 1
    # With the right token (here as htmx sends it, in the header) the same requests work.
    r = client.post(
        f"/console/approvals/{appr_id}/approve", data={"why": "looks fine"}, headers={"X-CSRF-Token": token}
    )
    assert r.status_code == 303 and r.headers["location"] == f"/console/approvals/{appr_id}?done=approved"
    assert approval_status(console, appr_id) == "approved"
    d = console.decision(wf, status="not_executed")  # the workflow went on after the approval
    assert d.outcome["final"]["status"] == "not_executed"
    with console.rt.db.reader() as s:
        rec = s.scalar(sa.select(AuditRecord).where(AuditRecord.action == "approval.approved"))
        assert rec.actor == "ada" and rec.outcome["why"] == "looks fine"
    page = client.get(f"/console/decisions/{wf}")
    assert page.status_code == 200 and "approval.approved" in page.text and "recovery.finished" in page.text
    r = client.post("/console/controls/pause", data={"why": "incident 42", "csrf": token})
    assert r.status_code == 303
    banner = client.get("/console/approvals").text
    assert "Every workflow runs as shadow" in banner and "incident 42" in banner
    r = client.post("/console/controls/pause", data={"why": "again", "csrf": token})
    assert r.status_code == 409 and "already on" in r.text
    assert client.post("/console/controls/resume", data={"why": "", "csrf": token}).status_code == 422
    assert client.post("/console/controls/resume", data={"why": "fixed", "csrf": token}).status_code == 303
    assert "Every workflow runs as shadow" not in client.get("/console").text
    r = client.post("/console/logout", data={"csrf": token})
    assert r.status_code == 303
    with console.rt.db.reader() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(ConsoleSession)) == 0
    assert client.get("/console").status_code == 303


def test_viewer_sees_no_buttons_and_cannot_approve(console: Service) -> None:
    _, appr_id = pending_approval(console)
    viewer = logged_in(console, "vera")
    page = viewer.get(f"/console/approvals/{appr_id}")
    assert page.status_code == 200
    assert (
        "/approve" not in page.text and "/reject" not in page.text and "needs the operator role" in page.text
    )
    token = csrf_of(page.text)  # the logout form's token: a valid CSRF token of this session
    r = viewer.post(f"/console/approvals/{appr_id}/approve", data={"csrf": token, "why": "sneaky"})
    assert r.status_code == 403 and "vera has role viewer" in r.text
    r = viewer.post(f"/console/approvals/{appr_id}/reject", data={"csrf": token, "why": "sneaky"})
    assert r.status_code == 403
    assert approval_status(console, appr_id) == "pending"
    operator = logged_in(console, "otto")
    page = operator.get(f"/console/approvals/{appr_id}")
    assert f"/console/approvals/{appr_id}/approve" in page.text
    r = operator.post(f"/console/approvals/{appr_id}/reject", data={"csrf": csrf_of(page.text), "why": ""})
    assert r.status_code == 422 and "needs a why" in r.text
    assert approval_status(console, appr_id) == "pending"


def test_admin_pages_are_refused_to_an_operator(console: Service) -> None:
    op = logged_in(console, "otto")
    token = session_csrf(op)
    assert op.get("/console/users").status_code == 403
    assert "Users" not in re.sub(r"<main>.*", "", op.get("/console").text, flags=re.S)  # no nav link
    for path, data in (
        ("/console/controls/pause", {"why": "x"}),
        ("/console/users/add", {"username": "mallory", "role": "admin", "password": PASSWORD}),
        ("/console/tokens/issue", {"username": "otto", "name": "mine", "days": "1"}),
        ("/console/users/ada/revoke", {}),
    ):
        r = op.post(path, data={**data, "csrf": token})
        assert r.status_code == 403 and "this needs admin" in r.text, path
    with console.rt.db.reader() as s:
        assert s.scalar(sa.select(User).where(User.username == "mallory")) is None
        assert controls(s).kill_switch is None
    policy = op.get("/console/policy").text
    assert "Pause all" not in policy and "needs the admin role" in policy


def test_admin_manages_users_and_tokens(console: Service) -> None:
    admin = logged_in(console, "ada")
    token = session_csrf(admin, "/console/users")
    r = admin.post(
        "/console/users/add", data={"csrf": token, "username": "nia", "role": "operator", "password": "short"}
    )
    assert r.status_code == 422 and "at least 12 characters" in r.text
    r = admin.post(
        "/console/users/add",
        data={"csrf": token, "username": "nia", "role": "operator", "password": PASSWORD},
    )
    assert r.status_code == 303
    r = admin.post(
        "/console/tokens/issue", data={"csrf": token, "username": "nia", "name": "export", "days": "7"}
    )
    assert r.status_code == 200
    plain = re.search(r'<pre id="new-token">(bo_\d+_[^<]+)</pre>', r.text)
    assert plain, "the new token is shown once"
    api = TestClient(console.client.app)
    assert api.get("/api/kpis", headers={"Authorization": f"Bearer {plain.group(1)}"}).status_code == 200
    assert plain.group(1) not in admin.get("/console/users").text  # never shown again
    tok_id = int(plain.group(1).split("_")[1])
    assert admin.post(f"/console/tokens/{tok_id}/revoke", data={"csrf": token}).status_code == 303
    assert api.get("/api/kpis", headers={"Authorization": f"Bearer {plain.group(1)}"}).status_code == 401
    assert admin.post("/console/users/nia/revoke", data={"csrf": token}).status_code == 303
    assert login(TestClient(console.client.app, follow_redirects=False), "nia").status_code == 401


def test_pages_and_audit_export(console: Service) -> None:
    wf, appr_id = pending_approval(console)
    client = logged_in(console, "vera")
    overview = client.get("/console")
    assert overview.status_code == 200
    assert "Approvals waiting" in overview.text and "49.00 USD" in overview.text and "<svg" in overview.text
    bad = client.get("/console?since=yesterday")
    assert bad.status_code == 422 and "is not a date" in bad.text
    queue = client.get("/console/approvals")
    assert f"/console/approvals/{appr_id}" in queue.text and "49.00 USD" in queue.text
    assert client.get("/console/approvals?status=bogus").status_code == 422
    detail = client.get(f"/console/approvals/{appr_id}").text
    assert "Proposed actions" in detail and "Drafted messages" in detail and "Score" in detail
    assert client.get("/console/approvals/99999").status_code == 404
    decision = client.get(f"/console/decisions/{wf}").text
    assert "Timeline" in decision and "recovery.decided" in decision and "approval.requested" in decision
    policy = client.get("/console/policy").text
    assert "Full version" in policy and "Kill switch" in policy and "modes:" in policy
    audit = client.get("/console/audit?action=approval.")
    assert (
        audit.status_code == 200
        and "approval.requested" in audit.text
        and "recovery.decided" not in audit.text
    )
    assert client.get("/console/audit?since=nope").status_code == 422
    export = client.get(f"/console/audit/export?workflow_id={wf}")
    assert export.status_code == 200 and "attachment" in export.headers["content-disposition"]
    rows = [json.loads(line) for line in export.text.splitlines()]
    assert [r["action"] for r in rows] == ["recovery.decided", "approval.requested"]
    assert all(r["workflow_id"] == wf and len(r["hash"]) == 64 for r in rows)
    assert rows[0]["seq"] < rows[1]["seq"]


def test_edit_then_approve_from_the_console(console: Service) -> None:
    wf, appr_id = pending_approval(console)
    op = logged_in(console, "otto")
    page = op.get(f"/console/approvals/{appr_id}").text
    token = csrf_of(page)
    with console.rt.db.reader() as s:
        plan = s.get(Decision, wf).plan  # type: ignore[union-attr]
    kinds = [m["kind"] for m in plan["messages"]]
    email = next(m for m in plan["messages"] if m.get("subject") is not None)
    form: dict[str, Any] = {"csrf": token, "why": "softer tone", "retry": [r[:16] for r in plan["retries"]]}
    for m in plan["messages"]:
        form[f"body_{m['kind']}"] = m["body"]
        if m.get("subject") is not None:
            form[f"subject_{m['kind']}"] = m["subject"]
    form[f"body_{email['kind']}"] = "Hello, your card was declined. Please update it when you can."
    bad = op.post(f"/console/approvals/{appr_id}/edit", data={**form, "retry": ["not-a-time"]})
    assert bad.status_code == 422 and "not a date and time" in bad.text
    nothing = op.post(
        f"/console/approvals/{appr_id}/edit",
        data={k: v for k, v in form.items() if not k.startswith("body_")},
    )
    assert nothing.status_code == 422 and "Nothing was edited" in nothing.text
    assert approval_status(console, appr_id) == "pending"
    r = op.post(f"/console/approvals/{appr_id}/edit", data=form)
    assert r.status_code == 303, r.text
    with console.rt.db.reader() as s:
        appr = s.get(Approval, appr_id)
        assert appr.status == "approved" and appr.decided_by == "otto"  # type: ignore[union-attr]
        new_plan = s.get(Decision, wf).plan  # type: ignore[union-attr]
    assert {m["kind"] for m in new_plan["messages"]} == set(kinds)
    edited = next(m for m in new_plan["messages"] if m["kind"] == email["kind"])
    assert edited["body"].startswith("Hello, your card was declined") and edited["template"].endswith(
        "+edited"
    )
    assert new_plan["retries"] == plan["retries"]  # unchanged times are not an edit
