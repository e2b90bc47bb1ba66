"""reliability: step effects (idempotent database effects of workflow steps)

Revision ID: 0007
Revises: 0006

`step_effects` holds, per workflow and step attempt, the result of the step's database effects, written
in the same transaction: a step re-run after a crash (committed, but DBOS had not yet recorded its
output) returns that result instead of counting a governed action or appending an audit record twice.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import billops.store.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "step_effects",
        sa.Column("workflow_id", sa.String(length=300), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("result", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("at", billops.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("workflow_id", "key"),
    )


def downgrade() -> None:
    op.drop_table("step_effects")
