"""Users, API tokens and console logins (governance/users.py, login_throttle.py, token_secrets.py) and
`billops users …`, on a real SQLite and PostgreSQL database: argon2id for passwords and a keyed HMAC for
token secrets (the key outside the database), back-off instead of lockout (an outsider cannot lock the
real user out), one answer and one cost whatever the reason, failed logins sampled into the audit log,
token expiry and revocation, user revocation, last-admin protection, and the audit records of all of it.

Costs are asserted by counting argon2 checks (`token_secrets._verify_argon2`), never by wall time."""

from __future__ import annotations

import getpass
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from typer.testing import CliRunner

from billops.cli import app
from billops.config import Settings
from billops.errors import BillopsError
from billops.governance import audit, login_throttle, token_secrets, users
from billops.governance.login_throttle import LoginLimits
from billops.store.db import Database
from billops.store.models import ApiToken, AuditRecord, Base, ConsoleSession, LoginThrottle, User

PASSWORD = "correct-horse-battery-staple"
LIMITS = LoginLimits(
    pair_failures=3,
    client_failures=10,
    account_failures=20,
    longest=timedelta(minutes=15),
    account_longest=timedelta(seconds=30),
    window=timedelta(minutes=60),
)
HOME = "198.51.100.7"  # the rightful user's client
EVIL = "203.0.113.9"  # an outsider's
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    d = Database(database_url)
    d.migrate()
    yield d
    d.dispose()


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The server's data dir, where its token key lives (<data_dir>/token.key); `billops …` finds it
    through BILLOPS_DATA_DIR, as on a server."""
    monkeypatch.setenv("BILLOPS_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def settings(data_dir: Path, database_url: str) -> Settings:
    return Settings(data_dir=data_dir, database_url=database_url)


@pytest.fixture
def argon2_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every argon2 verification (password or legacy token hash) made during the test."""
    calls: list[str] = []
    real = token_secrets._verify_argon2

    def counting(stored: str, secret: str) -> bool:
        calls.append(stored[:30])
        return real(stored, secret)

    monkeypatch.setattr(token_secrets, "_verify_argon2", counting)
    return calls


def add(db: Database, name: str, role: str = "viewer", password: str | None = PASSWORD) -> None:
    with db.session() as s:
        users.create_user(s, name, role, password, by="admin-alice")


def token(db: Database, settings: Settings, name: str, days: float = 30) -> str:
    with db.session() as s:
        return users.issue_token(s, name, "ci", days=days, max_days=365, by="admin-alice", settings=settings)[
            1
        ]


def who(db: Database, settings: Settings, plain: str, now: datetime | None = None) -> users.Principal:
    with db.reader() as s:
        return users.authenticate_token(s, plain, now=now, settings=settings)


def login(
    db: Database,
    name: str,
    password: str,
    now: datetime,
    *,
    client: str = HOME,
    device: str | None = None,
    limits: LoginLimits = LIMITS,
) -> User | users.AuthError:
    with db.session() as s:  # the counts and their audit sample are committed, as the console does
        return users.login(s, name, password, client=client, device=device, limits=limits, now=now)


def answer(res: User | users.AuthError) -> tuple[int, str]:
    assert isinstance(res, users.AuthError), res
    return res.status, res.message


def audit_rows(db: Database, action: str | None = None) -> list[AuditRecord]:
    with db.reader() as s:
        q = sa.select(AuditRecord).order_by(AuditRecord.seq)
        if action:
            q = q.where(AuditRecord.action == action)
        return list(s.scalars(q))


def throttle_rows(db: Database) -> list[LoginThrottle]:
    with db.reader() as s:
        return list(s.scalars(sa.select(LoginThrottle)))


def all_stored_text(db: Database) -> str:
    """Every column of every row of every BillOps table, as text."""
    parts: list[str] = []
    with db.engine.connect() as c:
        for table in Base.metadata.sorted_tables:
            for row in c.execute(sa.select(table)):
                parts.extend(str(v) for v in row)
    return "\n".join(parts)


# ---------------------------------------------------------------- secrets at rest


def test_passwords_are_argon2id_and_token_secrets_keyed_outside_the_database(
    db: Database, settings: Settings
) -> None:
    add(db, "alice", "operator")
    plain = token(db, settings, "alice")
    with db.session() as s:
        sid, _csrf = users.create_session(s, users.get_user(s, "alice"), hours=1)
    with db.reader() as s:
        u = users.get_user(s, "alice")
        [t] = list(s.scalars(sa.select(ApiToken)))
        [sess] = list(s.scalars(sa.select(ConsoleSession)))
    assert u.password_hash is not None and u.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    key_file = settings.data_dir / "token.key"
    key = key_file.read_bytes()
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600 and len(key) >= 32
    kid = token_secrets.TokenKey(key).kid
    assert (
        t.token_hash.startswith(f"hmac-sha256:{kid}:")
        and len(t.token_hash) == len("hmac-sha256:") + 8 + 1 + 64
    )
    assert sess.id_hash == users.session_hash(sid) and len(sess.id_hash) == 64
    secret = plain.split("_", 2)[2]
    stored = all_stored_text(db)
    for value in (PASSWORD, plain, secret, sid, key.decode()):
        assert value not in stored, "a plain secret or the token key was written to the database"
    assert u.password_hash in stored and t.token_hash in stored  # the scan does see the hash columns
    assert who(db, settings, plain).username == "alice"
    # Another key (another server, a lost key file) cannot verify the token.
    other = Settings(data_dir=settings.data_dir, token_key=SecretStr("k" * 40))
    with pytest.raises(users.AuthError, match=r"^invalid or expired token$"):
        who(db, other, plain)


def test_the_token_key_setting_is_validated() -> None:
    with pytest.raises(ValueError, match="token key needs at least 32 characters"):
        Settings(token_key=SecretStr("short"))


def test_importing_users_makes_no_argon2_hash() -> None:
    """The dummy password hash (for unknown users) is made at the first login, not at import."""
    code = (
        "import billops.governance.users, billops.cli\n"
        "from billops.governance import token_secrets as t\n"
        "print(t._dummy_password_hash.cache_info().currsize)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "0"


# ---------------------------------------------------------------- console logins: back-off


def test_backoff_grows_per_pair_refuses_even_the_right_password_and_then_lets_it_in(db: Database) -> None:
    add(db, "bob")
    for i in range(2):
        assert answer(login(db, "bob", "wrong-password-xyz", T0 + timedelta(seconds=i))) == (
            401,
            "wrong username or password",
        )
    # The third failure in a row from this client starts the back-off: 1 s, then 2 s, 4 s …
    assert answer(login(db, "bob", "wrong-password-xyz", T0 + timedelta(seconds=2)))[0] == 401
    res = login(db, "bob", PASSWORD, T0 + timedelta(seconds=2.5))
    assert isinstance(res, users.AuthError) and (res.status, res.retry_after) == (429, 1)
    assert res.message == "too many failed logins: try again in 1 s"
    assert answer(login(db, "bob", "wrong-password-xyz", T0 + timedelta(seconds=3.1)))[0] == 401  # 4th: 2 s
    res = login(db, "bob", PASSWORD, T0 + timedelta(seconds=4))
    assert isinstance(res, users.AuthError) and res.status == 429 and res.retry_after == 2
    for _ in range(5, 20):  # keep failing whenever allowed: the back-off doubles up to 15 minutes
        with db.reader() as s:
            until = s.scalar(
                sa.select(LoginThrottle.blocked_until).where(
                    LoginThrottle.scope == "pair", LoginThrottle.account == "bob"
                )
            )
        assert until is not None
        login(db, "bob", "wrong-password-xyz", until + timedelta(milliseconds=1))
    [pair] = [r for r in throttle_rows(db) if r.scope == "pair"]
    assert pair.blocked_until is not None
    assert pair.failures == 19 and pair.blocked_until - pair.last_failure_at == timedelta(minutes=15)
    # After the back-off the right password works and the pair's count is forgotten.
    ok = login(db, "bob", PASSWORD, pair.blocked_until + timedelta(seconds=1))
    assert isinstance(ok, User) and ok.username == "bob" and ok.last_login_at is not None
    assert [r.scope for r in throttle_rows(db)] == ["client"]  # the client's own count stays


def test_a_success_resets_the_pair_count(db: Database) -> None:
    add(db, "bob")
    assert isinstance(login(db, "bob", "nope-nope-nope", T0), users.AuthError)
    assert isinstance(login(db, "bob", "nope-nope-nope", T0), users.AuthError)
    assert isinstance(login(db, "bob", PASSWORD, T0), User)
    assert isinstance(login(db, "bob", "nope-nope-nope", T0), users.AuthError)
    assert isinstance(login(db, "bob", "nope-nope-nope", T0), users.AuthError)
    assert isinstance(login(db, "bob", PASSWORD, T0), User)  # 2 failures since the success, not 4


def test_an_outsider_hammering_an_admin_cannot_lock_them_out(db: Database, argon2_calls: list[str]) -> None:
    add(db, "root", "admin")
    for i in range(200):
        res = login(db, "root", f"guess-{i:04d}-password", T0 + timedelta(seconds=i // 50), client=EVIL)
        assert isinstance(res, users.AuthError)
    assert len(argon2_calls) <= 6, "throttled guesses must not spend argon2"
    # Meanwhile the admin logs in from their own client, at once.
    assert isinstance(login(db, "root", PASSWORD, T0 + timedelta(seconds=4), client=HOME), User)


def test_spraying_many_accounts_from_one_client_backs_the_client_off(db: Database) -> None:
    add(db, "carol")
    for i in range(LIMITS.client_failures):
        assert answer(login(db, f"user{i}", "wrong-password-123", T0, client=EVIL))[0] == 401
    assert answer(login(db, "carol", PASSWORD, T0, client=EVIL))[0] == 429  # this client, any account
    assert isinstance(login(db, "carol", PASSWORD, T0, client=HOME), User)  # other clients are not affected
    # A success on an account of the attacker's own does not clear the client's count.
    add(db, "mallory")
    assert answer(login(db, "mallory", PASSWORD, T0, client=EVIL))[0] == 429


def test_a_distributed_attack_only_slows_new_clients_and_never_a_known_device(db: Database) -> None:
    add(db, "dana")
    clients = [f"192.0.2.{i}" for i in range(1, 12)]
    n = 0
    for c in clients:  # 2 failures per address: under every per-pair and per-client threshold
        for _ in range(2):
            login(db, "dana", "wrong-password-123", T0, client=c)
            n += 1
    assert n > LIMITS.account_failures
    res = login(db, "dana", PASSWORD, T0, client=HOME)  # a new client for dana is slowed, not locked:
    assert isinstance(res, users.AuthError) and res.status == 429
    assert res.retry_after is not None and res.retry_after <= LIMITS.account_longest.total_seconds()
    # The browser she logged in with before (its device cookie) is not slowed at all.
    assert isinstance(login(db, "dana", PASSWORD, T0, client=HOME, device="nonce-of-her-laptop"), User)
    # And once the slow-down has passed, any client may try again.
    assert isinstance(login(db, "dana", PASSWORD, T0 + LIMITS.account_longest, client="192.0.2.200"), User)


def test_one_answer_and_one_argon2_check_whatever_the_reason(db: Database, argon2_calls: list[str]) -> None:
    add(db, "carol")
    add(db, "svc", password=None)  # token-only: no console login
    add(db, "dave")
    add(db, "admin", "admin")
    with db.session() as s:
        users.revoke_user(s, "dave", by="admin")
    cases = {
        "unknown user": ("nobody", PASSWORD),
        "wrong password": ("carol", "wrong-password-123"),
        "token-only user": ("svc", PASSWORD),
        "revoked user": ("dave", PASSWORD),
    }
    for why, (name, password) in cases.items():
        before = len(argon2_calls)
        assert answer(login(db, name, password, T0)) == (401, "wrong username or password"), why
        assert len(argon2_calls) - before == 1, f"{why}: exactly one argon2 check"
    failed = audit_rows(db, "auth.login_failed")
    assert [r.actor for r in failed] == ["nobody", "carol", "svc", "dave"]


def test_names_and_passwords_no_user_can_have_are_refused_like_any_other(db: Database) -> None:
    add(db, "ivy")
    for name, password in (("ivy\x00", PASSWORD), ("\ud800ivy", PASSWORD), ("ivy", "pass\x00\udfffword-1")):
        assert answer(login(db, name, password, T0)) == (401, "wrong username or password")
    assert isinstance(login(db, "ivy", PASSWORD, T0), User)


def test_throttled_answers_cost_no_argon2_and_do_not_tell_who_exists(
    db: Database, argon2_calls: list[str]
) -> None:
    add(db, "erin")
    for name in ("erin", "ghost"):  # a real and an unknown user, the same failures from the same client
        for _ in range(LIMITS.pair_failures):
            login(db, name, "wrong-password-123", T0, client=EVIL)
    before = len(argon2_calls)
    real = login(db, "erin", PASSWORD, T0, client=EVIL)  # even the right password
    unknown = login(db, "ghost", PASSWORD, T0, client=EVIL)
    assert len(argon2_calls) == before, "a throttled attempt answers before any password work"
    assert answer(real) == answer(unknown) == (429, "too many failed logins: try again in 1 s")
    with db.reader() as s:
        rows = {(r.scope, r.account): r.failures for r in s.scalars(sa.select(LoginThrottle))}
    assert rows[("pair", "erin")] == rows[("pair", "ghost")] == LIMITS.pair_failures  # same state for both


def test_failed_logins_are_sampled_into_the_audit_log_not_one_record_each(db: Database) -> None:
    add(db, "fay")
    loose = LoginLimits(pair_failures=100, client_failures=100, account_failures=100)
    for i in range(30):
        login(db, "fay", f"wrong-password-{i:03d}", T0 + timedelta(minutes=i), client=EVIL, limits=loose)
    [first] = audit_rows(db, "auth.login_failed")  # 30 failures, 1 record
    assert first.outcome["failures"] == 1 and first.outcome["client"] == EVIL
    # The next window's first failure writes one record that stands for all the failures since.
    login(db, "fay", "wrong-password-x", T0 + timedelta(minutes=61), client=EVIL, limits=loose)
    records = audit_rows(db, "auth.login_failed")
    assert len(records) == 2 and records[1].outcome["failures"] == 30
    assert records[1].outcome["in_window"] == 31
    with db.reader() as s:
        assert audit.verify(s).ok


def test_quiet_counts_are_pruned_and_their_last_failures_audited(db: Database) -> None:
    add(db, "gus")
    for i in range(3):
        login(db, f"nobody{i}", "wrong-password-123", T0, client=EVIL)
    login(db, "gus", "wrong-password-123", T0, client=EVIL)
    login(db, "gus", "wrong-password-456", T0 + timedelta(minutes=1), client=EVIL)  # counted, not audited
    assert len(throttle_rows(db)) == 4 + 1 + 4  # pairs + the client + accounts
    before = len(audit_rows(db, "auth.login_failed"))
    login(db, "someone", "wrong-password-123", T0 + timedelta(hours=2), client=HOME)  # a later failure prunes
    left = {(r.scope, r.account, r.client) for r in throttle_rows(db)}
    assert left == {("pair", "someone", HOME), ("client", "", HOME), ("account", "someone", "")}
    records = audit_rows(db, "auth.login_failed")[before:]
    assert sorted((r.actor, r.outcome["failures"]) for r in records) == [("gus", 1), ("someone", 1)]


def test_set_password_ends_sessions_and_forgets_the_failures(db: Database) -> None:
    add(db, "bob")
    for _ in range(3):
        login(db, "bob", "wrong-password-xyz", T0)
    assert answer(login(db, "bob", PASSWORD, T0))[0] == 429
    with db.session() as s:
        sid, _ = users.create_session(s, users.get_user(s, "bob"), hours=1)
        users.set_password(s, "bob", "a-brand-new-password", by="admin-alice")
    with db.reader() as s:
        assert users.session_principal(s, sid) is None
    assert isinstance(login(db, "bob", "a-brand-new-password", T0), User)
    assert isinstance(login(db, "bob", PASSWORD, T0), users.AuthError)


def test_counts_are_shared_by_workers_and_exact_under_concurrent_failures(database_url: str) -> None:
    """Two workers (two engines on the same database), four threads each failing at once: every failure
    is counted once, and a back-off set through one worker refuses through the other."""
    from concurrent.futures import ThreadPoolExecutor

    workers = [Database(database_url), Database(database_url)]
    try:
        for w in workers:
            w.migrate()
        attempt = login_throttle.Attempt(account="hank", client=EVIL)
        limits = LoginLimits(pair_failures=40, client_failures=40, account_failures=100)

        def fail(i: int) -> None:
            with workers[i % 2].session() as s:
                login_throttle.record_failure(s, attempt, limits, T0)

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(fail, range(40)))
        with workers[1].reader() as s:
            counts = {r.scope: r.failures for r in s.scalars(sa.select(LoginThrottle))}
            assert counts == {"pair": 40, "client": 40, "account": 40}
            until = login_throttle.blocked_until(s, attempt, limits, T0)
        assert until == T0 + timedelta(seconds=1)  # the 40th failure started the back-off
        with workers[0].reader() as s:
            assert login_throttle.blocked_until(s, attempt, limits, T0) == until
            other = login_throttle.Attempt(account="hank", client=HOME)
            assert login_throttle.blocked_until(s, other, limits, T0) is None
            records = s.scalars(sa.select(AuditRecord).where(AuditRecord.action == "auth.login_failed"))
            assert len(list(records)) == 1  # 40 concurrent failures, 1 audit record
    finally:
        for w in workers:
            w.dispose()


def test_client_keys() -> None:
    assert login_throttle.client_of("203.0.113.9") == "203.0.113.9"
    assert login_throttle.client_of("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"  # one /64, one client
    assert login_throttle.client_of("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert login_throttle.client_of("::ffff:192.0.2.1") == "192.0.2.1"
    assert login_throttle.client_of(None) == "?"
    assert login_throttle.backoff(2, 3, timedelta(minutes=15)) is None
    assert [login_throttle.backoff(n, 3, timedelta(minutes=15)) for n in (3, 4, 5)] == [
        timedelta(seconds=1),
        timedelta(seconds=2),
        timedelta(seconds=4),
    ]
    assert login_throttle.backoff(10_000, 3, timedelta(minutes=15)) == timedelta(minutes=15)


# ---------------------------------------------------------------- API tokens


def test_token_authenticates_until_it_expires(db: Database, settings: Settings) -> None:
    add(db, "ci", "viewer", password=None)
    plain = token(db, settings, "ci", days=1)
    p = who(db, settings, plain)
    assert (p.username, p.role) == ("ci", "viewer") and p.via.startswith("token:")
    assert p.can("viewer") and not p.can("operator")
    with pytest.raises(users.AuthError, match=r"^invalid or expired token$"):
        who(db, settings, plain, now=datetime.now(UTC) + timedelta(days=1, minutes=1))
    short = token(db, settings, "ci", days=1 / 86400)  # one second
    with pytest.raises(users.AuthError, match=r"^invalid or expired token$"):
        who(db, settings, short, now=datetime.now(UTC) + timedelta(seconds=2))


def test_every_bad_token_gets_the_same_answer_and_no_argon2(
    db: Database, settings: Settings, argon2_calls: list[str]
) -> None:
    add(db, "ci", password=None)
    add(db, "gone", password=None)
    add(db, "root", "admin")
    good, revoked, expired, orphan = (token(db, settings, n) for n in ("ci", "ci", "ci", "gone"))
    tid = lambda plain: int(plain.split("_", 2)[1])  # noqa: E731
    with db.session() as s:
        users.revoke_token(s, tid(revoked), by="root")
        s.execute(sa.update(ApiToken).where(ApiToken.id == tid(expired)).values(expires_at=T0))
        users.revoke_user(s, "gone", by="root")
    bad = {
        "malformed": "not-a-token",
        "bad id": "bo_x_" + "a" * 43,
        "id 0": "bo_0_" + "a" * 43,
        "huge id": "bo_9223372036854775808_" + "a" * 43,
        "unknown id": "bo_999999_" + "a" * 43,
        "wrong secret": f"bo_{tid(good)}_" + "x" * 43,
        "revoked": revoked,
        "expired": expired,
        "user revoked": orphan,
    }
    for why, given in bad.items():
        with pytest.raises(users.AuthError) as exc:
            who(db, settings, given)
        assert (exc.value.status, exc.value.message) == (401, "invalid or expired token"), why
    assert argon2_calls == []
    assert who(db, settings, good).username == "ci" and argon2_calls == []


def test_pre_0005_argon2_tokens_keep_working_and_are_rekeyed_once(
    db: Database, settings: Settings, argon2_calls: list[str]
) -> None:
    add(db, "ci", password=None)
    plain = token(db, settings, "ci")
    token_id, secret = int(plain.split("_", 2)[1]), plain.split("_", 2)[2]
    legacy = token_secrets.hash_password(secret)  # what a token issued before 0005 holds
    with db.session() as s:
        s.execute(sa.update(ApiToken).where(ApiToken.id == token_id).values(token_hash=legacy))
    wrong = f"bo_{token_id}_" + "w" * 43
    with pytest.raises(users.AuthError, match=r"^invalid or expired token$"):
        who(db, settings, wrong)
    assert len(argon2_calls) == 1  # the one case that still costs argon2: a live legacy token
    assert who(db, settings, plain).username == "ci" and len(argon2_calls) == 2
    assert users.should_touch(token_id)  # the server records the use and re-stores the hash keyed
    with db.session() as s:
        users.touch_token(s, token_id)
    with db.reader() as s:
        stored = s.get(ApiToken, token_id).token_hash
    assert stored.startswith("hmac-sha256:")
    assert who(db, settings, plain).username == "ci"
    with pytest.raises(users.AuthError):
        who(db, settings, wrong)
    assert len(argon2_calls) == 2  # keyed from now on


def test_a_token_issued_without_a_server_key_is_argon2_until_its_first_use(
    db: Database, settings: Settings
) -> None:
    add(db, "ci", password=None)
    with db.session() as s:  # e.g. a script writing to the database with no settings at hand
        tok, plain = users.issue_token(s, "ci", "ci", days=1, max_days=9, by="x")
    assert tok.token_hash.startswith("$argon2id$")
    assert who(db, settings, plain).username == "ci"
    with db.session() as s:
        users.touch_token(s, tok.id)
    with db.reader() as s:
        assert s.get(ApiToken, tok.id).token_hash.startswith("hmac-sha256:")


def test_migration_0005_lifts_old_locks_and_keeps_old_argon2_tokens(
    database_url: str, settings: Settings, argon2_calls: list[str]
) -> None:
    from alembic import command
    from alembic.config import Config

    from billops.store.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(cfg, "0004")  # a database from before this change …
    old = Database(database_url)
    secret = "s" * 43
    try:
        with old.session() as s:  # … with a hard-locked admin and an argon2-hashed token
            s.add(
                User(
                    username="root",
                    role="admin",
                    password_hash=token_secrets.hash_password(PASSWORD),
                    created_by="x",
                    failed_logins=4,
                    locked_until=datetime.now(UTC) + timedelta(minutes=10),
                )
            )
            s.flush()
            uid = s.scalar(sa.select(User.id))
            s.add(
                ApiToken(
                    id=7,
                    user_id=uid,
                    name="ci",
                    token_hash=token_secrets.hash_password(secret),
                    expires_at=datetime.now(UTC) + timedelta(days=1),
                )
            )
        old.migrate()
        with old.reader() as s:
            u = users.get_user(s, "root")
            assert (u.failed_logins, u.locked_until) == (0, None)
        assert isinstance(login(old, "root", PASSWORD, datetime.now(UTC)), User)  # not locked any more
        assert who(old, settings, f"bo_7_{secret}").username == "root"  # the old token works …
        with old.session() as s:
            users.touch_token(s, 7)
        n = len(argon2_calls)
        assert who(old, settings, f"bo_7_{secret}").username == "root"
        assert len(argon2_calls) == n  # … and is keyed after its first use
    finally:
        old.dispose()


def test_token_lifetime_and_name_are_checked(db: Database) -> None:
    add(db, "ci", password=None)
    with db.session() as s:
        for days in (0, -1, 366):
            with pytest.raises(BillopsError, match="between a moment and 365 days") as exc:
                users.issue_token(s, "ci", "ci", days=days, max_days=365, by="x")
            assert exc.value.status == 422
        with pytest.raises(BillopsError, match="name"):
            users.issue_token(s, "ci", "", days=1, max_days=365, by="x")


def test_a_revoked_token_stops_at_once(db: Database, settings: Settings) -> None:
    add(db, "ci", password=None)
    plain, other = token(db, settings, "ci"), token(db, settings, "ci")
    assert who(db, settings, plain).username == "ci"
    tid = int(plain.split("_", 2)[1])
    with db.session() as s:
        users.revoke_token(s, tid, by="admin-alice")
    with pytest.raises(users.AuthError, match=r"^invalid or expired token$"):
        who(db, settings, plain)
    assert who(db, settings, other).username == "ci"  # only that token
    with db.session() as s, pytest.raises(BillopsError, match="already revoked") as exc:
        users.revoke_token(s, tid, by="admin-alice")
    assert exc.value.status == 409


def test_revoking_a_user_ends_tokens_sessions_and_logins(db: Database, settings: Settings) -> None:
    add(db, "eve", "operator")
    add(db, "admin", "admin")
    plain = token(db, settings, "eve")
    assert who(db, settings, plain).username == "eve"
    with db.session() as s:
        sid, _ = users.create_session(s, users.get_user(s, "eve"), hours=1)
    with db.reader() as s:
        assert users.session_principal(s, sid) is not None
    with db.session() as s:
        users.revoke_user(s, "eve", by="admin")
    with pytest.raises(users.AuthError):
        who(db, settings, plain)
    with db.reader() as s:
        assert users.session_principal(s, sid) is None
        assert s.scalar(sa.select(sa.func.count()).select_from(ConsoleSession)) == 0
        [t] = list(s.scalars(sa.select(ApiToken)))
        assert t.revoked_at is not None
    assert isinstance(login(db, "eve", PASSWORD, datetime.now(UTC)), users.AuthError)
    with db.session() as s, pytest.raises(BillopsError, match="revoked"):
        users.issue_token(s, "eve", "again", days=1, max_days=365, by="admin")


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


def test_every_change_is_audited_with_who_did_it(db: Database, settings: Settings) -> None:
    add(db, "root", "admin")
    add(db, "gina", "operator")
    plain = token(db, settings, "gina")
    with db.session() as s:
        users.revoke_token(s, int(plain.split("_", 2)[1]), by="root")
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


def test_cli_first_admin_token_list_and_revoke(db: Database, database_url: str, settings: Settings) -> None:
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
    assert plain.startswith("bo_") and who(db, settings, plain).username == "ci-bot"
    with db.reader() as s:  # the CLI stores it keyed with the server's key (BILLOPS_DATA_DIR)
        assert s.get(ApiToken, int(plain.split("_", 2)[1])).token_hash.startswith("hmac-sha256:")
    code, out, _ = run(database_url, "list")
    assert code == 0 and "ci-bot" in out and "alice" in out
    code, out, _ = run(database_url, "tokens")
    assert code == 0 and "ci-bot" in out and "active" in out and plain.split("_", 2)[2] not in out

    code, _, exc = run(database_url, "revoke-token", plain.split("_", 2)[1])
    assert code == 0, exc
    with pytest.raises(users.AuthError, match=r"^invalid or expired token$"):
        who(db, settings, plain)
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
