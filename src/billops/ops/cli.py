"""`billops workflows list|show|resume`: the durable workflows, for an operator. The commands read and
write DBOS's tables through a DBOSClient on the process database; they never launch DBOS (a running
`billops serve` picks up what `resume` re-enqueues)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from billops.errors import BillopsError

workflows_app = typer.Typer(
    help="Durable workflows: find failed or stuck ones and resume them.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)


def _runtime() -> Any:
    from billops.cli import runtime

    return runtime()


def _run(fn: Callable[[], Any]) -> Any:
    """Errors as the CLI's `error: …` with exit code 2 (1 is kept for "found something wrong")."""
    try:
        return fn()
    except BillopsError as exc:
        typer.echo(f"error: {exc.message}", err=True)  # unwrapped: messages carry whole ids
        raise typer.Exit(2) from None


@workflows_app.command("list")
def list_cmd(
    status: Annotated[
        str | None,
        typer.Option(
            help="error | stuck | pending | enqueued | delayed | cancelled | success (default: all)."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Only this workflow function (process_event, …).")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first (1–1000).")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Workflows, newest first, with whole ids, status, times and the error's first line."""
    from billops.ops.workflows import list_workflows

    rt = _runtime()
    items = _run(lambda: list_workflows(rt, status=status, name=name, limit=limit))
    if as_json:
        print(json.dumps(items, indent=2, ensure_ascii=False))
        return
    t = Table(title=f"Workflows ({status or 'all'})")
    for col in ("id", "status", "name", "created", "updated", "error"):
        t.add_column(col, overflow="fold")
    widest = max((len(w["workflow_id"]) for w in items), default=2)
    t.columns[0].no_wrap, t.columns[0].min_width = True, widest  # whole ids: never cut
    for w in items:
        t.add_row(
            w["workflow_id"],
            w["status"] + (" (stuck)" if w["stuck"] else ""),
            w["name"],
            (w["created_at"] or "")[:19],
            (w["updated_at"] or "")[:19],
            (w["error"] or "")[:120],
        )
    if not items:
        print(f"no {status + ' ' if status else ''}workflows")
        return
    Console(width=max(console.width, widest + 110)).print(t)


@workflows_app.command("show")
def show_cmd(
    workflow_id: Annotated[str, typer.Argument(help="The whole workflow id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One workflow: its steps (function names, outputs and errors shortened), the error in full, the
    related decision, and what `resume` would do."""
    from billops.ops.workflows import show_workflow

    rt = _runtime()
    w = _run(lambda: show_workflow(rt, workflow_id))
    if as_json:
        print(json.dumps(w, indent=2, ensure_ascii=False))
        return
    # Plain print for lines with ids: Rich would wrap a long id across lines.
    print(f"{w['workflow_id']}  {w['name']}  {w['status']}" + ("  (stuck)" if w["stuck"] else ""))
    console.print(f"created {w['created_at']}  updated {w['updated_at']}  queue {w['queue'] or '-'}  "
                  f"executor {w['executor'] or '-'}  version {w['app_version'] or '-'}")  # fmt: skip
    if w["waiting_until"] or w["last_activity"]:
        console.print(f"last activity {w['last_activity']}  waiting until {w['waiting_until'] or '-'}")
    d = w["decision"]
    if d:
        print(
            f"decision {d['workflow_id']}: {d['platform']} invoice {d['invoice_id']}, "
            f"route {d['route']}, mode {d['mode']}, status {d['status']}"
        )
    t = Table(title="Steps")
    for col in ("#", "function", "completed", "output / error"):
        t.add_column(col, overflow="fold")
    for s in w["steps"]:
        cell = f"[red]{s['error']}[/red]" if s["error"] else (s["output"] or "")
        if s["child_workflow_id"]:
            cell = f"child {s['child_workflow_id']} {cell}"
        t.add_row(str(s["step"]), s["function"], (s["completed_at"] or "")[:19], cell)
    console.print(t)
    if w["error"]:
        console.print("[bold red]error[/bold red]")
        print(w["error"])  # in full, unwrapped
    r = w["resume"]
    if r["possible"]:
        how = f"rewind to step {r['from_step']}" if r["how"] == "rewind" else "resume where it stands"
        print(f"resume: possible ({how}): billops workflows resume {w['workflow_id']}")
    else:
        console.print(f"resume: not possible ({r['why']})")


@workflows_app.command("resume")
def resume_cmd(
    workflow_id: Annotated[str, typer.Argument(help="The whole workflow id.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    from_step: Annotated[
        int | None, typer.Option(help="ERROR only: re-run from this step (default: the step that failed).")
    ] = None,
    by: Annotated[str | None, typer.Option(help="Who resumes (default: cli:<user>; recorded).")] = None,
) -> None:
    """Send a failed, cancelled or stuck workflow back to the workers (audited as workflow.resumed).
    A workflow in ERROR re-runs from the step that failed; the steps before it are not run again."""
    from billops.governance.users_cli import actor
    from billops.ops.workflows import resume_workflow, show_workflow

    rt = _runtime()
    w = _run(lambda: show_workflow(rt, workflow_id))
    if not yes:
        r = w["resume"]
        what = (
            f"re-run {workflow_id} from step {from_step or r.get('from_step')}"
            if r.get("how") == "rewind"
            else f"resume {workflow_id}"
        )
        if r["possible"] and not typer.confirm(f"{w['name']} is {w['status']}: {what}?"):
            err.print("nothing done")
            raise typer.Exit(1)
    out = _run(lambda: resume_workflow(rt, workflow_id, actor=by or actor(), from_step=from_step))
    where = f" from step {out['from_step']}" if out["how"] == "rewind" else ""
    print(f"workflow {workflow_id} ({out['from_status']}) sent back to the workers{where} by {out['by']}")
