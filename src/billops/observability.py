"""Logs (structlog, JSON or console, with trace ids) and Prometheus metrics."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Callable, Iterator

import structlog
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

WEBHOOKS = Counter(
    "billops_webhooks_total", "Webhook requests by platform and outcome", ["platform", "outcome"]
)
WEBHOOK_SECONDS = Histogram(
    "billops_webhook_seconds",
    "Time to verify, store and enqueue one webhook",
    ["platform"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)



class WorkflowCounts(Collector):
    """`billops_workflows{status=…}`: durable workflows by DBOS status (lower case) plus `stuck`, read
    from the database at scrape time through `source` (set by billops.ops.workflows, which caches the
    answer for a few seconds). Database-wide: every worker reports the same numbers (use max, not sum)."""

    def __init__(self) -> None:
        self.source: Callable[[], dict[str, int] | None] | None = None

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("billops_workflows", "Durable workflows by status", labels=["status"])

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "billops_workflows",
            "Durable workflows by status (stuck: pending/enqueued with no progress past the threshold)",
            labels=["status"],
        )
        counts = self.source() if self.source is not None else None
        for status, n in sorted((counts or {}).items()):
            family.add_metric([status], n)
        yield family


WORKFLOW_COUNTS = WorkflowCounts()
REGISTRY.register(WORKFLOW_COUNTS)


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
