"""`billops drafting …`: the template and prompt versions in use, and a preview of one draft."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from billops.errors import BillopsError, InputError

drafting_app = typer.Typer(
    help="Drafting: template and prompt versions, draft previews.", no_args_is_help=True
)


def _policy_and_settings():  # type: ignore[no-untyped-def]
    from billops.config import Settings
    from billops.policy import load_policy

    settings = Settings()
    return load_policy(settings.policy_file), settings


@drafting_app.command("versions")
def versions() -> None:
    """The template set and prompt set the policy selects, with their recorded versions."""
    from billops.drafting.prompts import load_prompt_set
    from billops.drafting.templates import load_template_set

    try:
        policy, _ = _policy_and_settings()
        typer.echo(f"templates: {load_template_set(policy.templates).version}")
        typer.echo(f"prompts:   {load_prompt_set(policy.drafting.prompts).version}")
        typer.echo(f"backend:   recovery={policy.drafting.backend_for('recovery')}")
        c = policy.drafting.llm
        typer.echo(
            f"llm:       {c.provider}:{c.model} (daily budget {policy.drafting.daily_token_budget} tokens)"
        )
    except BillopsError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc


@drafting_app.command("preview")
def preview(
    kind: Annotated[str, typer.Argument(help="reassuring_email, urgent_email, card_update_email, sms, …")],
    facts: Annotated[Path, typer.Option("--facts", help='JSON: the DraftFacts, or {"facts": …, "local": …}')],
    backend: Annotated[str, typer.Option(help="templates or llm")] = "templates",
) -> None:
    """Print one draft and its record. The llm preview calls the configured model (not durable)."""
    from billops.drafting.schema import KINDS, DraftFacts, DraftLocal
    from billops.drafting.service import llm_draft, template_draft

    try:
        if backend not in ("templates", "llm"):
            raise InputError(f"--backend must be templates or llm, not {backend!r}")
        if kind not in KINDS:
            raise InputError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
        raw = json.loads(facts.read_text(encoding="utf-8"))
        body = raw.get("facts", raw)
        f = DraftFacts.model_validate({**body, "kind": kind, "channel": KINDS[kind][0]})
        local = DraftLocal.model_validate(raw.get("local", {}))
        policy, settings = _policy_and_settings()
        draft = template_draft(kind, f, local, policy.templates)
        mode: Literal["templates", "llm"] = "llm" if backend == "llm" else "templates"
        if mode == "llm":
            from billops.runtime import start_runtime

            start_runtime(settings, launch_dbos=False)  # the budget and usage rows need the database
            draft = llm_draft(
                kind, f, local, policy=policy, settings=settings, workflow_id=None, fallback=draft
            )
    except (OSError, ValueError) as exc:  # unreadable file, bad JSON, invalid facts
        typer.echo(f"error: {facts}: {exc}", err=True)
        raise typer.Exit(2) from exc
    except BillopsError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    if draft.subject:
        typer.echo(f"Subject: {draft.subject}\n")
    typer.echo(draft.body)
    typer.echo(json.dumps(draft.record.model_dump(mode="json"), indent=2))
