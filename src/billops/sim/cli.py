"""`billops demo`, mounted on the main CLI by `register(app)`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the `demo` command to the BillOps CLI."""

    @app.command("demo")
    def demo(
        customers: Annotated[int, typer.Option(min=1, max=50_000, help="Subscribers to simulate.")] = 300,
        days: Annotated[int, typer.Option(min=1, max=365, help="Days of activity, ending now.")] = 30,
        seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same business.")] = 7,
        data_dir: Annotated[
            Path, typer.Option("--data-dir", help="Demo data directory (its own database).")
        ] = Path(".billops/demo"),
        port: Annotated[
            int | None, typer.Option(min=1, max=65535, help="Server port (default: a free one).")
        ] = None,
        train: Annotated[
            bool,
            typer.Option(
                "--train/--no-train",
                help="Train the recovery model on a simulated year first (else rules-v1 decides).",
            ),
        ] = True,
        keep: Annotated[
            bool,
            typer.Option(
                "--keep",
                help="Post into the existing demo database (shows deduplication) instead of a fresh one.",
            ),
        ] = False,
    ) -> None:
        """Simulate a subscription business and send its Stripe webhooks to a real BillOps server
        (shadow mode: decisions are recorded, nothing is changed), then summarize the decisions."""
        from billops.sim.demo import run_demo

        summary = run_demo(
            customers=customers,
            days=days,
            seed=seed,
            data_dir=data_dir,
            port=port,
            keep=keep,
            train_model=train,
        )
        if summary["errors"]:
            raise typer.Exit(1)
