"""The web console (Jinja2 + htmx), served by the same FastAPI app under /console."""

from __future__ import annotations

from fastapi import FastAPI


def mount_console(app: FastAPI) -> None:
    """Add the console's routes and static files to the app (being built: see issue 5)."""
