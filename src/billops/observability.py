"""Logs (structlog, JSON or console, with trace ids) and Prometheus metrics."""

from __future__ import annotations

import logging
import sys
import uuid

import structlog
from prometheus_client import Counter, Histogram

WEBHOOKS = Counter(
    "billops_webhooks_total", "Webhook requests by platform and outcome", ["platform", "outcome"]
)
WEBHOOK_SECONDS = Histogram(
    "billops_webhook_seconds",
    "Time to verify, store and enqueue one webhook",
    ["platform"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


def new_trace_id(traceparent: str | None = None) -> str:
    """Reuse a W3C traceparent's trace id when the caller sent one."""
    if traceparent:
        parts = traceparent.split("-")
        if len(parts) >= 2 and len(parts[1]) == 32:
            return parts[1]
    return uuid.uuid4().hex


def configure_logging(level: str = "INFO", json_logs: bool = False) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(message)s")
    renderer = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )


log = structlog.get_logger("billops")
