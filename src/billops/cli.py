"""`billops`: the command line. Subcommands that belong to a domain live beside it (sim/cli.py,
mirror/cli.py, …) and are mounted here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from billops.config import Settings, load_settings
from billops.errors import BillopsError

app = typer.Typer(
    help="BillOps: governed, audited decisions for subscription billing operations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
approvals_app = typer.Typer(help="The human approval queue.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
decisions_app = typer.Typer(help="Decisions BillOps made.", no_args_is_help=True)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
app.add_typer(approvals_app, name="approvals")
app.add_typer(audit_app, name="audit")
app.add_typer(decisions_app, name="decisions")
app.add_typer(db_app, name="db")

console = Console()
err = Console(stderr=True)
_overrides: dict[str, Any] = {}


@app.callback()
def _root(
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (env BILLOPS_DATA_DIR).")] = None,
    database_url: Annotated[str | None, typer.Option(help="Database URL (env BILLOPS_DATABASE_URL).")] = None,
) -> None:
    _overrides.clear()
    if data_dir is not None:
        _overrides["data_dir"] = data_dir
    if database_url is not None:
        _overrides["database_url"] = database_url


def settings() -> Settings:
    return load_settings(**_overrides)


def runtime() -> Any:
    from billops.governance import audit_keys
    from billops.runtime import open_runtime

    rt = open_runtime(settings())
    audit_keys.configure(rt.settings)  # audit records this command appends are signed with these keys
    return rt


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (env BILLOPS_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (env BILLOPS_PORT).")] = None,
) -> None:
    """Run the HTTP service (webhooks, API, metrics) with the durable workflows in the same process."""
    import uvicorn

    from billops.app import create_app
    from billops.observability import configure_logging
    from billops.runtime import start_runtime, stop_runtime

    s = settings()
    configure_logging(s.log_level, s.log_json)
    # DBOS is launched here, before the event loop starts (DBOS refuses to register queues inside one).
    rt = start_runtime(s)
    try:
        app_ = create_app(s, manage_runtime=False)
        err.print(f"BillOps on http://{host or s.host}:{port or s.port}  database {rt.db.safe_url}")
        uvicorn.run(app_, host=host or s.host, port=port or s.port, log_level="warning", access_log=False)
    finally:
        stop_runtime()


# ---------------------------------------------------------------- approvals


@approvals_app.command("list")
def approvals_list(
    status: Annotated[str, typer.Option(help="pending | approved | rejected | expired | all")] = "pending",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List approvals (pending by default)."""
    from billops.governance.approvals import list_approvals

    items = list_approvals(runtime(), status=None if status == "all" else status)
    if as_json:
        print(json.dumps(items, indent=2))
        return
    t = Table(title=f"Approvals ({status})")
    for col in ("id", "workflow", "invoice", "amount", "route", "score", "why", "expires"):
        t.add_column(col)
    for a in items:
        t.add_row(
            str(a["id"]),
            a["workflow_id"],
            a["invoice_id"],
            _money(a["amount"], a["currency"]),
            a["route"],
            str(a["score"]),
            a["why"],
            a["expires_at"][:16],
        )
    console.print(t)


def _decide(ref: str, approve: bool, by: str | None, note: str | None, edits: Any = None) -> None:
    from billops.governance.approvals import decide_approval
    from billops.governance.users_cli import actor

    who = by or actor()
    view = decide_approval(runtime(), ref, approve=approve, by=who, note=note, edits=edits)
    edited = " (edited)" if view.get("edits") else ""
    console.print(
        f"approval {view['id']} {view['status']}{edited} by {who}: workflow {view['workflow_id']} continues"
    )


@approvals_app.command("show")
def approvals_show(ref: Annotated[str, typer.Argument(help="Approval id or decision workflow id.")]) -> None:
    """One approval in full: customer, invoice, actions, drafted messages, score and reasons, guardrails."""
    from billops.governance.approvals import get_approval

    print(json.dumps(get_approval(runtime(), ref), indent=2, ensure_ascii=False))


@approvals_app.command("approve")
def approvals_approve(
    ref: Annotated[str, typer.Argument(help="Approval id or decision workflow id.")],
    by: Annotated[str | None, typer.Option(help="Who approves (default: cli:<user>).")] = None,
    why: Annotated[str | None, typer.Option("--why", "--note", help="Why (recorded).")] = None,
    retry: Annotated[
        list[str] | None,
        typer.Option(
            help="Edit: a retry time (ISO 8601 with zone), repeat for several; replaces the plan's."
        ),
    ] = None,
    no_retry: Annotated[bool, typer.Option(help="Edit: approve without any retry.")] = False,
    drop: Annotated[list[str] | None, typer.Option(help="Edit: an action type not to execute.")] = None,
    message: Annotated[
        list[str] | None,
        typer.Option(
            help="Edit: KIND=FILE, the message KIND's new body from FILE (first line 'Subject: …' "
            "sets the subject)."
        ),
    ] = None,
) -> None:
    """Approve a waiting decision (optionally edited first): its workflow executes the plan."""
    from datetime import datetime

    from billops.errors import InputError
    from billops.governance.approvals import ApprovalEdits, MessageEdit

    retries = None
    if no_retry:
        retries = []
    elif retry:
        try:
            retries = [datetime.fromisoformat(r.replace("Z", "+00:00")) for r in retry]
        except ValueError as exc:
            raise InputError(f"--retry: {exc}") from None
    messages = {}
    for m in message or []:
        kind, sep, path = m.partition("=")
        if not sep:
            raise InputError(f"--message {m!r}: expected KIND=FILE")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"--message {kind}: cannot read {path} ({exc.strerror})") from None
        subject = None
        if text.startswith("Subject:"):
            first, _, text = text.partition("\n")
            subject = first[len("Subject:") :].strip()
        messages[kind] = MessageEdit(subject=subject, body=text.strip())
    try:
        edits = ApprovalEdits(retries=retries, messages=messages, drop_actions=list(drop or []))
    except ValueError as exc:
        raise InputError(f"edits: {exc}") from None
    _decide(ref, True, by, why, edits)


@approvals_app.command("reject")
def approvals_reject(
    ref: Annotated[str, typer.Argument(help="Approval id or decision workflow id.")],
    why: Annotated[str, typer.Option("--why", "--note", help="Why (required, recorded).")],
    by: Annotated[str | None, typer.Option(help="Who rejects (default: cli:<user>).")] = None,
) -> None:
    """Reject a waiting decision: nothing is executed."""
    _decide(ref, False, by, why)


# ---------------------------------------------------------------- audit


@audit_app.command("verify")
def audit_verify(
    checkpoint: Annotated[
        str | None,
        typer.Option(
            "--checkpoint",
            help="A checkpoint file (JSONL) or s3://bucket/prefix: also prove that nothing up to the "
            "newest checkpoint was rewritten, cut or wiped.",
        ),
    ] = None,
) -> None:
    """Recompute the keyed hash chain; exit 1 if any record was edited, deleted, cut or rehashed."""
    from billops.governance import audit_checkpoint
    from billops.governance.audit import verify
    from billops.governance.audit_keys import keyring

    rt = runtime()
    ring = keyring(rt.settings)
    cps: list[Any] = []
    store_problems: list[str] = []
    if checkpoint is not None:
        store = audit_checkpoint.open_store(checkpoint, rt.settings)
        cps, store_problems = audit_checkpoint.load(store, ring)
        if not cps and not store_problems:
            store_problems = [f"{store.where}: no checkpoint found (nothing to prove the log against)"]
    with rt.db.reader() as s:
        res = verify(s, keys=ring, checkpoints=cps, legacy_until=rt.settings.audit_legacy_until)
    problems = store_problems + res.problems
    if not problems:
        console.print(f"[green]audit log intact[/green]: {res.records} records, head {res.head_hash}")
        if res.legacy:
            console.print(
                f"  {res.legacy} record(s) from before keying (sha256 only): a checkpoint or "
                f"BILLOPS_AUDIT_LEGACY_UNTIL={res.legacy} pins them (docs/audit.md)"
            )
        if res.key_ids:
            console.print("  keys: " + ", ".join(f"{k} ({n} records)" for k, n in res.key_ids.items()))
        if checkpoint is not None and res.checkpoint_seq == 0:
            console.print(f"  {res.checkpoints} checkpoint(s) of the empty log confirmed: nothing to prove")
        elif checkpoint is not None:
            newest = max(cps, key=lambda c: c.seq)
            console.print(
                f"  {res.checkpoints} checkpoint(s) confirmed: records 1..{res.checkpoint_seq} unchanged "
                f"since {newest.at}; {res.last_seq - res.checkpoint_seq} record(s) added after it"
            )
        return
    verdict = "TAMPERED" if res.problems else "NOT PROVEN (checkpoint store)"
    err.print(f"[red]audit log {verdict}[/red]: {len(problems)} problem(s) in {res.records} records")
    for p in problems:
        err.print(f"  - {p}", soft_wrap=True, markup=False, highlight=False)
    raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint_cmd(
    to: Annotated[
        str | None,
        typer.Option("--to", help="JSONL file or s3://bucket/prefix (default: BILLOPS_AUDIT_CHECKPOINT_TO)."),
    ] = None,
) -> None:
    """Verify the records since the last checkpoint, then sign the chain's head and append it to the store."""
    from billops.governance import audit_checkpoint
    from billops.governance.audit_keys import keyring

    rt = runtime()
    target = to or rt.settings.audit_checkpoint_to
    if not target:
        raise BillopsError("say where to write: --to FILE|s3://bucket/prefix or BILLOPS_AUDIT_CHECKPOINT_TO")
    store = audit_checkpoint.open_store(target, rt.settings)
    with rt.db.reader() as s:
        cp, _ = audit_checkpoint.take(
            s, store, keyring(rt.settings), legacy_until=rt.settings.audit_legacy_until
        )
    console.print(f"checkpoint written to {store.where}: record {cp.seq}, hash {cp.hash}, key {cp.key_id}")


@audit_app.command("rotate-key")
def audit_rotate_key() -> None:
    """Add a new key to <data_dir>/audit.keys and sign new records with it (old records keep theirs)."""
    from billops.governance.audit_keys import key_file, rotate_file_key

    s = runtime().settings
    old, new = rotate_file_key(s)
    console.print(
        f"audit key rotated in {key_file(s)}: new records are signed with {new}; {old} stays for verifying. "
        "Copy the file to every host that writes or verifies."
    )


@audit_app.command("keys")
def audit_keys_cmd() -> None:
    """Show the audit key ids (never the secrets), where they come from and which one is active."""
    from billops.governance.audit_keys import keyring

    ring = keyring(runtime().settings)
    console.print(f"audit keys from {ring.source}")
    for kid in ring.keys:
        console.print(f"  {kid}{'  (active)' if kid == ring.active_id else ''}")


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write ('-' for stdout).")] = Path(
        "-"
    ),
    workflow: Annotated[str | None, typer.Option(help="Only this workflow id.")] = None,
) -> None:
    """Write the audit log as JSONL (one record per line, with its hashes)."""
    from billops.governance.audit import export

    rt = runtime()
    n = 0
    with rt.db.reader() as s:
        if str(out) == "-":
            for rec in export(s, workflow_id=workflow):
                sys.stdout.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
            return
        tmp = out.with_suffix(out.suffix + ".part")
        with tmp.open("w", encoding="utf-8") as fh:
            for rec in export(s, workflow_id=workflow):
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
        tmp.replace(out)  # never a half-written export
    err.print(f"wrote {n} records to {out}")


# ---------------------------------------------------------------- decisions


def _money(amount: int, currency: str) -> str:
    from billops.domain import Money

    return Money(amount=amount, currency=currency).format()


@decisions_app.command("list")
def decisions_list(
    route: Annotated[str | None, typer.Option(help="Only this route.")] = None,
    limit: Annotated[int, typer.Option(help="How many.")] = 30,
) -> None:
    """The newest decisions."""
    import sqlalchemy as sa

    from billops.store.models import Decision

    with runtime().db.reader() as s:
        q = sa.select(Decision).order_by(Decision.created_at.desc()).limit(limit)
        if route:
            q = q.where(Decision.route == route)
        rows = list(s.scalars(q))
    t = Table(title="Decisions")
    for col in ("workflow", "invoice", "amount", "decline", "score", "route", "mode", "status", "retries"):
        t.add_column(col)
    for d in rows:
        t.add_row(
            d.workflow_id,
            d.invoice_id,
            _money(d.amount, d.currency),
            d.decline_code or "",
            str(d.score),
            d.route,
            d.mode,
            d.status,
            ", ".join(r[:16] for r in d.plan.get("retries", [])),
        )
    console.print(t)


@decisions_app.command("show")
def decisions_show(workflow_id: str) -> None:
    """One decision in full: reasons, retries, actions, drafted messages, versions, outcome."""
    from billops.api import decision_view
    from billops.errors import NotFound
    from billops.store.models import Decision

    with runtime().db.reader() as s:
        d = s.get(Decision, workflow_id)
        if d is None:
            raise NotFound(f"no decision {workflow_id!r}")
        print(json.dumps(decision_view(d), indent=2, ensure_ascii=False))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the BillOps tables (the server also does this on start)."""
    rt = runtime()
    console.print(f"database {rt.db.safe_url} is at the newest schema")


def _mount_optional() -> None:
    try:
        from billops.sim.cli import register as register_demo
    except ImportError:  # pragma: no cover - sim ships with the package
        pass
    else:
        register_demo(app)
    try:
        from billops.mirror.cli import sync_app
    except ImportError:  # pragma: no cover
        pass
    else:
        app.add_typer(sync_app, name="sync")
    from billops.mirror.history import register as register_history  # billops history import|export

    register_history(app)
    from billops.recovery.cli import register as register_recovery

    register_recovery(app)
    from billops.governance.cli import register as register_governance

    register_governance(app)
    from billops.governance.users_cli import register as register_users  # billops users …

    register_users(app)
    from billops.governance.contacts_cli import register as register_contacts  # billops contacts …

    register_contacts(app)
    from billops.actions.cli import webhooks_app  # billops webhooks secret|schemas|test

    app.add_typer(webhooks_app, name="webhooks")
    from billops.drafting.cli import drafting_app  # billops drafting versions|preview

    app.add_typer(drafting_app, name="drafting")
    from billops.ops.cli import workflows_app  # billops workflows list|show|resume

    app.add_typer(workflows_app, name="workflows")


_mount_optional()


def main() -> None:
    try:
        app()
    except BillopsError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise SystemExit(2) from None
