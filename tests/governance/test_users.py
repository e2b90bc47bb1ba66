"""Users, API tokens and console logins (governance/users.py) and `billops users …`, on a real SQLite and
PostgreSQL database: argon2 hashes only, lockout and unlock, one message for every failed login, token
expiry and revocation, user revocation, last-admin protection, and the audit records of all of it."""

from __future__ import annotations

import getpass
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from billops.cli import app
from billops.errors import BillopsError
from billops.governance import audit, users
from billops.store.db import Database
from billops.store.models import ApiToken, AuditRecord, Base, ConsoleSession, User

PASSWORD = "correct-horse-battery-staple"
LOCKOUT = timedelta(minutes=15)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    d = Database(database_url)
    d.migrate()
    yield d
    d.dispose()


def add(db: Database, name: str, role: str = "viewer", password: str | None = PASSWORD) -> None:
    with db.session() as s:
        users.create_user(s, name, role, password, by="admin-alice")


def token(db: Database, name: str, days: float = 30) -> str:
    with db.session() as s:
        return users.issue_token(s, name, "ci", days=days, max_days=365, by="admin-alice")[1]


def who(db: Database, plain: str, now: datetime | None = None) -> users.Principal:
    with db.reader() as s:
        return users.authenticate_token(s, plain, now=now)


def login(db: Database, name: str, password: str, now: datetime) -> User | users.AuthError:
    with db.session() as s:  # the failure count and its audit record are committed, as the console does
        return users.login(s, name, password, max_failures=3, lockout=LOCKOUT, now=now)


def audit_rows(db: Database) -> list[AuditRecord]:
    with db.reader() as s:
        return list(s.scalars(sa.select(AuditRecord).order_by(AuditRecord.seq)))


def all_stored_text(db: Database) -> str:
    """Every column of every row of every BillOps table, as text."""
    parts: list[str] = []
    with db.engine.connect() as c:
        for table in Base.metadata.sorted_tables:
            for row in c.execute(sa.select(table)):
                parts.extend(str(v) for v in row)
    return "\n".join(parts)


# ---------------------------------------------------------------- secrets at rest


def test_only_argon2_hashes_are_stored(db: Database) -> None:
    add(db, "alice", "operator")
    plain = token(db, "alice")
    with db.session() as s:
        sid, _csrf = users.create_session(s, users.get_user(s, "alice"), hours=1)
    with db.reader() as s:
        u = users.get_user(s, "alice")
        [t] = list(s.scalars(sa.select(ApiToken)))
        [sess] = list(s.scalars(sa.select(ConsoleSession)))
    assert u.password_hash is not None and u.password_hash.startswith("$argon2id$")
    assert t.token_hash.startswith("$argon2id$")
    assert sess.id_hash == users.session_hash(sid) and len(sess.id_hash) == 64
    secret = plain.split("_", 2)[2]
    stored = all_stored_text(db)
    for value in (PASSWORD, plain, secret, sid):
        assert value not in stored, "a plain secret was written to the database"
    assert u.password_hash in stored and t.token_hash in stored  # the scan does see the hash columns
    assert who(db, plain).username == "alice"


# ---------------------------------------------------------------- console logins


def test_lockout_after_repeated_failures_and_unlock_after_the_period(db: Database) -> None:
    add(db, "bob")
    t0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    for i in range(3):
        res = login(db, "bob", "wrong-password-xyz", t0 + timedelta(seconds=i))
        assert isinstance(res, users.AuthError) and res.status == 401
        assert res.message == "wrong username or password"
    with db.reader() as s:
        assert users.get_user(s, "bob").locked_until == t0 + timedelta(seconds=2) + LOCKOUT
    # Locked: even the right password is refused, with a 429 that says until when.
    res = login(db, "bob", PASSWORD, t0 + timedelta(minutes=5))
    assert isinstance(res, users.AuthError) and res.status == 429 and "locked until" in res.message
    # After the lockout period the right password works, and the counters are reset.
    ok = login(db, "bob", PASSWORD, t0 + LOCKOUT + timedelta(seconds=3))
    assert isinstance(ok, User) and ok.username == "bob"
    with db.reader() as s:
        u = users.get_user(s, "bob")
        assert u.failed_logins == 0 and u.locked_until is None and u.last_login_at is not None
    actions = [(r.action, r.actor) for r in audit_rows(db)]
    assert actions.count(("auth.login_failed", "bob")) == 2
    assert ("auth.locked", "bob") in actions and ("auth.login", "bob") in actions


def test_a_success_resets_the_failure_count(db: Database) -> None:
    add(db, "bob")
    t0 = datetime.now(UTC)
    assert isinstance(login(db, "bob", "nope-nope-nope", t0), users.AuthError)
    assert isinstance(login(db, "bob", "nope-nope-nope", t0), users.AuthError)
    assert isinstance(login(db, "bob", PASSWORD, t0), User)
    assert isinstance(login(db, "bob", "nope-nope-nope", t0), users.AuthError)
    with db.reader() as s:
        assert users.get_user(s, "bob").locked_until is None  # 1 failure since the success, not 3


def test_one_message_whatever_the_reason(db: Database) -> None:
    add(db, "carol")
    add(db, "svc", password=None)  # token-only: no console login
    add(db, "dave")
    add(db, "admin", "admin")
    with db.session() as s:
        users.revoke_user(s, "dave", by="admin")
    now = datetime.now(UTC)
    answers = [
        login(db, "nobody", PASSWORD, now),  # unknown user
        login(db, "carol", "wrong-password-123", now),  # wrong password
        login(db, "svc", PASSWORD, now),  # token-only user
        login(db, "dave", PASSWORD, now),  # revoked user
    ]
    assert all(isinstance(a, users.AuthError) for a in answers)
    assert {(a.status, a.message) for a in answers} == {(401, "wrong username or password")}  # type: ignore[union-attr]
    failed = [r for r in audit_rows(db) if r.action == "auth.login_failed"]
    assert [r.actor for r in failed] == ["nobody", "carol", "svc", "dave"]


# ---------------------------------------------------------------- API tokens


def test_token_authenticates_until_it_expires(db: Database) -> None:
    add(db, "ci", "viewer", password=None)
    plain = token(db, "ci", days=1)
    p = who(db, plain)
    assert (p.username, p.role) == ("ci", "viewer") and p.via.startswith("token:")
    assert p.can("viewer") and not p.can("operator")
    with pytest.raises(users.AuthError, match="expired"):
        who(db, plain, now=datetime.now(UTC) + timedelta(days=1, minutes=1))
    short = token(db, "ci", days=1 / 86400)  # one second
    with pytest.raises(users.AuthError, match="expired"):
        who(db, short, now=datetime.now(UTC) + timedelta(seconds=2))


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("not-a-token", "malformed API token"),
        ("bo_x_" + "a" * 43, "malformed API token"),
        ("bo_999999_" + "a" * 43, "unknown API token"),
    ],
)
def test_bad_tokens_are_refused(db: Database, given: str, message: str) -> None:
    with pytest.raises(users.AuthError, match=message) as exc:
        who(db, given)
    assert exc.value.status == 401


def test_wrong_secret_is_refused(db: Database) -> None:
    add(db, "ci", password=None)
    plain = token(db, "ci")
    tid = plain.split("_")[1]
    with pytest.raises(users.AuthError, match="wrong API token"):
        who(db, f"bo_{tid}_" + "x" * 43)


def test_token_lifetime_and_name_are_checked(db: Database) -> None:
    add(db, "ci", password=None)
    with db.session() as s:
        for days in (0, -1, 366):
            with pytest.raises(BillopsError, match="between a moment and 365 days") as exc:
                users.issue_token(s, "ci", "ci", days=days, max_days=365, by="x")
            assert exc.value.status == 422
        with pytest.raises(BillopsError, match="name"):
            users.issue_token(s, "ci", "", days=1, max_days=365, by="x")


def test_a_revoked_token_stops_at_once_even_when_verified_before(db: Database) -> None:
    add(db, "ci", password=None)
    plain, other = token(db, "ci"), token(db, "ci")
    assert who(db, plain).username == "ci"  # verified once: remembered in memory
    tid = int(plain.split("_")[1])
    with db.session() as s:
        users.revoke_token(s, tid, by="admin-alice")
    with pytest.raises(users.AuthError, match=f"API token {tid} was revoked"):
        who(db, plain)
    assert who(db, other).username == "ci"  # only that token
    with db.session() as s, pytest.raises(BillopsError, match="already revoked") as exc:
        users.revoke_token(s, tid, by="admin-alice")
    assert exc.value.status == 409


def test_revoking_a_user_ends_tokens_sessions_and_logins(db: Database) -> None:
    add(db, "eve", "operator")
    add(db, "admin", "admin")
    plain = token(db, "eve")
    assert who(db, plain).username == "eve"
    with db.session() as s:
        sid, _ = users.create_session(s, users.get_user(s, "eve"), hours=1)
    with db.reader() as s:
        assert users.session_principal(s, sid) is not None
    with db.session() as s:
        users.revoke_user(s, "eve", by="admin")
    with pytest.raises(users.AuthError):
        who(db, plain)
    with db.reader() as s:
        assert users.session_principal(s, sid) is None
        assert s.scalar(sa.select(sa.func.count()).select_from(ConsoleSession)) == 0
        [t] = list(s.scalars(sa.select(ApiToken)))
        assert t.revoked_at is not None
    assert isinstance(login(db, "eve", PASSWORD, datetime.now(UTC)), users.AuthError)
    with db.session() as s, pytest.raises(BillopsError, match="revoked"):
        users.issue_token(s, "eve", "again", days=1, max_days=365, by="admin")


def test_set_password_ends_sessions_and_lifts_a_lockout(db: Database) -> None:
    add(db, "bob")
    now = datetime.now(UTC)
    for _ in range(3):
        login(db, "bob", "wrong-password-xyz", now)
    with db.session() as s:
        sid, _ = users.create_session(s, users.get_user(s, "bob"), hours=1)
        users.set_password(s, "bob", "a-brand-new-password", by="admin-alice")
    with db.reader() as s:
        assert users.session_principal(s, sid) is None
    assert isinstance(login(db, "bob", "a-brand-new-password", now), User)
    assert isinstance(login(db, "bob", PASSWORD, now), users.AuthError)


# ---------------------------------------------------------------- admins, input errors, audit


def test_the_last_active_admin_cannot_be_revoked(db: Database) -> None:
    add(db, "root1", "admin")
    with db.session() as s, pytest.raises(BillopsError, match="last active admin") as exc:
        users.revoke_user(s, "root1", by="root1")
    assert exc.value.status == 409
    add(db, "root2", "admin")
    with db.session() as s:
        users.revoke_user(s, "root1", by="root2")
        assert users.count_admins(s) == 1
    with db.session() as s, pytest.raises(BillopsError, match="last active admin"):
        users.revoke_user(s, "root2", by="root2")
    with db.reader() as s:
        assert users.get_user(s, "root2").revoked_at is None


@pytest.mark.parametrize(
    ("name", "role", "password", "message", "status"),
    [
        ("frank", "boss", PASSWORD, "unknown role 'boss'", 422),
        ("frank", "viewer", "short", "at least 12 characters", 422),
        ("-frank", "viewer", PASSWORD, "username '-frank'", 422),
        ("fr ank", "viewer", PASSWORD, "letters, digits", 422),
        ("taken", "viewer", PASSWORD, "user 'taken' already exists", 409),
    ],
)
def test_bad_user_input_is_refused_clearly(
    db: Database, name: str, role: str, password: str, message: str, status: int
) -> None:
    add(db, "taken")
    with db.session() as s, pytest.raises(BillopsError, match=message) as exc:
        users.create_user(s, name, role, password, by="x")
    assert exc.value.status == status
    with db.reader() as s:
        assert [u.username for u in users.list_users(s)] == ["taken"]  # nothing half-written


def test_unknown_user_and_token(db: Database) -> None:
    with db.session() as s:
        for call in (
            lambda: users.revoke_user(s, "ghost", by="x"),
            lambda: users.set_password(s, "ghost", PASSWORD, by="x"),
            lambda: users.issue_token(s, "ghost", "ci", days=1, max_days=9, by="x"),
        ):
            with pytest.raises(BillopsError, match="no user 'ghost'") as exc:
                call()
            assert exc.value.status == 404
        with pytest.raises(BillopsError, match="no token 4242"):
            users.revoke_token(s, 4242, by="x")


def test_every_change_is_audited_with_who_did_it(db: Database) -> None:
    add(db, "root", "admin")
    add(db, "gina", "operator")
    plain = token(db, "gina")
    with db.session() as s:
        users.revoke_token(s, int(plain.split("_")[1]), by="root")
        users.set_password(s, "gina", "another-password-1", by="root")
        users.revoke_user(s, "gina", by="root")
    rows = [(r.action, r.actor, r.actor_type, r.subject) for r in audit_rows(db)]
    assert rows == [
        ("user.created", "admin-alice", "human", "user:root"),
        ("user.created", "admin-alice", "human", "user:gina"),
        ("token.issued", "admin-alice", "human", "user:gina"),
        ("token.revoked", "root", "human", "user:gina"),
        ("user.password_set", "root", "human", "user:gina"),
        ("user.revoked", "root", "human", "user:gina"),
    ]
    issued = audit_rows(db)[2].outcome
    assert set(issued) == {"token_id", "name", "expires_at"}  # never the token itself
    with db.reader() as s:
        assert audit.verify(s).ok


# ---------------------------------------------------------------- billops users …


def run(database_url: str, *args: str, input: str | None = None) -> tuple[int, str, BaseException | None]:
    res = CliRunner().invoke(app, ["--database-url", database_url, "users", *args], input=input)
    return res.exit_code, res.stdout, res.exception


def test_cli_first_admin_token_list_and_revoke(db: Database, database_url: str) -> None:
    me = f"cli:{getpass.getuser()}"
    code, _, exc = run(database_url, "add", "alice", "--role", "admin", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert code == 0, exc
    code, _, exc = run(database_url, "add", "ci-bot", "--role", "viewer", "--token-only")
    assert code == 0, exc
    code, _, exc = run(database_url, "add", "op", "--role", "operator", "--password-stdin", input=PASSWORD)
    assert code == 0, exc
    with db.reader() as s:
        made = {u.username: u for u in users.list_users(s)}
    assert {n: (u.role, u.created_by) for n, u in made.items()} == {
        "alice": ("admin", me),
        "ci-bot": ("viewer", me),
        "op": ("operator", me),
    }
    assert made["ci-bot"].password_hash is None and made["alice"].password_hash is not None
    assert isinstance(login(db, "alice", PASSWORD, datetime.now(UTC)), User)
    assert isinstance(login(db, "op", PASSWORD, datetime.now(UTC)), User)

    code, out, exc = run(database_url, "token", "ci-bot", "--name", "ci", "--days", "90")
    assert code == 0, exc
    plain = out.strip()
    assert plain.startswith("bo_") and who(db, plain).username == "ci-bot"
    code, out, _ = run(database_url, "list")
    assert code == 0 and "ci-bot" in out and "alice" in out
    code, out, _ = run(database_url, "tokens")
    assert code == 0 and "ci-bot" in out and "active" in out and plain.split("_")[2] not in out

    code, _, exc = run(database_url, "revoke-token", plain.split("_")[1])
    assert code == 0, exc
    with pytest.raises(users.AuthError, match="revoked"):
        who(db, plain)
    code, _, exc = run(database_url, "password", "op", input="new-password-abc\nnew-password-abc\n")
    assert code == 0, exc
    assert isinstance(login(db, "op", "new-password-abc", datetime.now(UTC)), User)
    code, _, exc = run(database_url, "revoke", "op")
    assert code == 0, exc
    assert {r.actor for r in audit_rows(db) if r.action.startswith(("user.", "token."))} == {me}


@pytest.mark.parametrize(
    ("args", "input", "message"),
    [
        (("add", "x1", "--role", "boss", "--token-only"), None, "unknown role 'boss'"),
        (("add", "x1", "--role", "viewer", "--password-stdin"), "short\n", "at least 12 characters"),
        (("add", "alice", "--role", "viewer", "--token-only"), None, "user 'alice' already exists"),
        (("revoke", "ghost"), None, "no user 'ghost'"),
        (("token", "ghost", "--name", "ci"), None, "no user 'ghost'"),
        (("token", "alice", "--name", "ci", "--days", "4000"), None, "between a moment and 365 days"),
        (("password", "ghost"), None, "no user 'ghost'"),
        (("revoke-token", "777"), None, "no token 777"),
        (("revoke", "alice"), None, "last active admin"),
    ],
)
def test_cli_errors_say_what_is_wrong(
    db: Database, database_url: str, args: tuple[str, ...], input: str | None, message: str
) -> None:
    add(db, "alice", "admin")
    code, _, exc = run(database_url, *args, input=input)
    assert code != 0 and isinstance(exc, BillopsError), exc
    assert message in exc.message
    with db.reader() as s:
        assert [u.username for u in users.list_users(s)] == ["alice"]


def test_cli_error_exit_code_and_message_from_the_real_command(database_url: str, db: Database) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "billops",
            "--database-url",
            database_url,
            "users",
            "add",
            "x",
            "--role",
            "root",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert "unknown role 'root': use one of viewer, operator, admin" in res.stderr
