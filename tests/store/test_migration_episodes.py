"""Migration 0008 on a database that already holds several decisions for one invoice: all are kept,
the first gets episode 1, the KPIs count the invoice once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from billops.governance.kpis import compute_kpis
from billops.store.db import MIGRATIONS
from billops.store.models import Decision


def test_0008_keeps_duplicates_and_kpis_count_the_invoice_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0007")
    engine = sa.create_engine(url)
    now = datetime.now(UTC)
    row = dict(
        platform="stripe",
        invoice_id="in_1",
        event_id="e",
        amount=21900,
        currency="gbp",
        route="auto_retry",
        score=80,
        mode="shadow",
        status="recorded",
        plan="{}",
        versions="{}",
        trace_id="t",
        outcome="{}",
        workflow="recovery",
        updated_at=now,
    )
    with engine.begin() as c:
        for i in range(3):
            c.execute(
                sa.table("decisions", *[sa.column(k) for k in [*row, "workflow_id", "created_at"]])
                .insert()
                .values(**row, workflow_id=f"wf{i}", created_at=now + timedelta(seconds=i))
            )
    command.upgrade(cfg, "head")
    with sa.orm.Session(engine) as s:
        keys = dict(s.execute(sa.select(Decision.workflow_id, Decision.episode_key)).all())
        assert keys == {"wf0": "stripe:in_1:1", "wf1": None, "wf2": None}
        k = compute_kpis(s, now - timedelta(days=1), now + timedelta(days=1))
    assert k["currencies"]["gbp"]["decisions"] == 1
    assert k["currencies"]["gbp"]["failed_amount"] == 21900  # not 65,700
