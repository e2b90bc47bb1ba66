"""decision episodes: one decision per invoice episode

Revision ID: 0008
Revises: 0007

`decisions.episode_key` (`<platform>:<invoice id>:<n>`, unique) makes one decision per invoice episode
real in the database: a later failure of the same invoice within the episode attaches to the decision
(docs/recovery.md, "One decision per invoice episode"). Existing databases may already hold several
decisions per invoice (shadow mode opened one per native retry before this): they are kept; the first
decision of each invoice gets episode 1, the later ones keep a NULL key, and the KPIs count each invoice
once whatever the key.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("decisions", sa.Column("episode_key", sa.String(length=320), nullable=True))
    bind = op.get_bind()
    d = sa.table(
        "decisions",
        sa.column("workflow_id", sa.String),
        sa.column("platform", sa.String),
        sa.column("invoice_id", sa.String),
        sa.column("created_at", sa.DateTime),
        sa.column("episode_key", sa.String),
    )
    first: dict[tuple[str, str], str] = {}
    rows = bind.execute(
        sa.select(d.c.workflow_id, d.c.platform, d.c.invoice_id).order_by(d.c.created_at, d.c.workflow_id)
    )
    for wf, platform, invoice_id in rows:
        first.setdefault((platform, invoice_id), wf)
    for (platform, invoice_id), wf in first.items():
        bind.execute(
            sa.update(d).where(d.c.workflow_id == wf).values(episode_key=f"{platform}:{invoice_id}:1")
        )
    op.create_index("uq_decisions_episode", "decisions", ["episode_key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_decisions_episode", table_name="decisions")
    op.drop_column("decisions", "episode_key")
