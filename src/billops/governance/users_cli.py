"""`billops users add | list | revoke | token | tokens | revoke-token | password`: people and API tokens.

Run these on the server's database (the same BILLOPS_DATA_DIR / BILLOPS_DATABASE_URL as `billops serve`).
The first admin is created here, `billops users add alice --role admin`, with a password asked twice;
there is never a default password. Every change is audited as `cli:<os user>`.
"""

from __future__ import annotations

import getpass
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from billops.errors import Conflict, InputError

users_app = typer.Typer(help="Users, roles and API tokens (docs/access.md).", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


def actor() -> str:
    """Who a CLI command acts as in the audit log."""
    return f"cli:{getpass.getuser()}"


def cli_runtime() -> Any:
    from billops.cli import runtime

    return runtime()


def _read_password(from_stdin: bool, username: str) -> str:
    from billops.governance.users import check_password

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise InputError("--password-stdin: no password on standard input")
    else:
        password = typer.prompt(
            f"password for {username}",
            hide_input=True,
            confirmation_prompt=True,
            prompt_suffix=": ",
        )
    check_password(password)
    return str(password)


def _when(value: object) -> str:
    return "" if value is None else str(value)[:16].replace("T", " ")


@users_app.command("add")
def add(
    username: Annotated[str, typer.Argument(help="Login name (letters, digits, . _ @ + -).")],
    role: Annotated[str, typer.Option(help="viewer | operator | admin")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
    ] = False,
    token_only: Annotated[
        bool, typer.Option("--token-only", help="A service user: API tokens only, no console login.")
    ] = False,
) -> None:
    """Add a user. Without --token-only the console password is asked twice (hidden)."""
    from billops.governance import users

    users.check_role(role)
    if token_only and password_stdin:
        raise InputError("--token-only users have no password: drop --password-stdin")
    rt = cli_runtime()
    with rt.db.reader() as s:  # say so before asking for a password
        if any(u.username == username for u in users.list_users(s)):
            raise Conflict(f"user {username!r} already exists")
    password = None if token_only else _read_password(password_stdin, username)
    with rt.db.session() as s:
        users.create_user(s, username, role, password, by=actor())
    how = "API tokens only" if token_only else "console login and API tokens"
    err.print(f"user [bold]{username}[/bold] added as {role} ({how})")


@users_app.command("list")
def list_() -> None:
    """Every user with role, login and token counts."""
    from datetime import UTC, datetime

    from billops.governance import users

    now = datetime.now(UTC)
    with cli_runtime().db.reader() as s:
        rows = users.list_users(s)
        active: dict[int, int] = {}
        for tok, _u in users.list_tokens(s):
            if tok.revoked_at is None and tok.expires_at > now:
                active[tok.user_id] = active.get(tok.user_id, 0) + 1
    t = Table(title="Users")
    for col in ("user", "role", "console", "tokens", "created", "by", "last login", "status"):
        t.add_column(col)
    for u in rows:
        status = (
            "revoked" if u.revoked_at else ("locked" if u.locked_until and u.locked_until > now else "active")
        )
        t.add_row(
            u.username,
            u.role,
            "yes" if u.password_hash else "no",
            str(active.get(u.id, 0)),
            _when(u.created_at),
            u.created_by,
            _when(u.last_login_at),
            status,
        )
    console.print(t)


@users_app.command("revoke")
def revoke(username: Annotated[str, typer.Argument(help="The user to revoke.")]) -> None:
    """Revoke a user: no more logins, every token and console session ends at once."""
    from billops.governance import users

    with cli_runtime().db.session() as s:
        users.revoke_user(s, username, by=actor())
    err.print(f"user [bold]{username}[/bold] revoked; their tokens and sessions no longer work")


@users_app.command("token")
def token(
    username: Annotated[str, typer.Argument(help="Whose token.")],
    name: Annotated[str, typer.Option("--name", help="What it is for, e.g. ci.")],
    days: Annotated[float, typer.Option(help="Lifetime in days (at most BILLOPS_TOKEN_MAX_DAYS).")] = 90,
) -> None:
    """Issue an API token. It is printed once, on stdout, and never stored: keep it now."""
    from billops.governance import users

    rt = cli_runtime()
    with rt.db.session() as s:
        tok, plain = users.issue_token(
            s,
            username,
            name,
            days=days,
            max_days=rt.settings.token_max_days,
            by=actor(),
            settings=rt.settings,  # the token key (governance/token_secrets.py)
        )
    err.print(
        f"token {tok.id} ({name}) for {username}, expires {_when(tok.expires_at.isoformat())} UTC. "
        "It is shown once; send it as `Authorization: Bearer <token>`."
    )
    print(plain)


@users_app.command("tokens")
def tokens(user: Annotated[str | None, typer.Option(help="Only this user's tokens.")] = None) -> None:
    """API tokens (never their secrets)."""
    from datetime import UTC, datetime

    from billops.governance import users

    now = datetime.now(UTC)
    with cli_runtime().db.reader() as s:
        rows = users.list_tokens(s, user)
    t = Table(title="API tokens")
    for col in ("id", "user", "name", "created", "expires", "last used", "status"):
        t.add_column(col)
    for tok, u in rows:
        status = "revoked" if tok.revoked_at else ("expired" if tok.expires_at <= now else "active")
        t.add_row(
            str(tok.id),
            u.username,
            tok.name,
            _when(tok.created_at),
            _when(tok.expires_at),
            _when(tok.last_used_at),
            status,
        )
    console.print(t)


@users_app.command("revoke-token")
def revoke_token(
    token_id: Annotated[int, typer.Argument(help="Token id (see `billops users tokens`).")],
) -> None:
    """Revoke one API token: it stops working at once."""
    from billops.governance import users

    with cli_runtime().db.session() as s:
        users.revoke_token(s, token_id, by=actor())
    err.print(f"token {token_id} revoked")


@users_app.command("password")
def password(
    username: Annotated[str, typer.Argument(help="Whose password.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
    ] = False,
) -> None:
    """Set a user's console password (asked twice); ends their console sessions and lifts a lockout."""
    from billops.governance import users

    rt = cli_runtime()
    with rt.db.reader() as s:
        users.get_user(s, username)  # unknown user: say so before asking
    new = _read_password(password_stdin, username)
    with rt.db.session() as s:
        users.set_password(s, username, new, by=actor())
    err.print(f"password of [bold]{username}[/bold] set; their console sessions were ended")


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
