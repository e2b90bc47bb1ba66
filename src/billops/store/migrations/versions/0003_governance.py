"""governance: users, tokens, sessions, controls, governed actions, labels

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 05:00:00

Users, API tokens and console sessions (roles); the kill switch / circuit breaker state; the
actions the guardrails counted; human verdicts as feedback labels; an approval's guardrails and edits.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import billops.store.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback_labels",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("workflow_id", sa.String(length=300), nullable=False),
        sa.Column("label", sa.String(length=20), nullable=False),
        sa.Column("by", sa.String(length=200), nullable=False),
        sa.Column("at", billops.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("why", sa.Text(), nullable=True),
        sa.Column("edits", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("feedback_labels", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_feedback_labels_workflow_id"), ["workflow_id"], unique=False)

    op.create_table(
        "governance_state",
        sa.Column("key", sa.String(length=40), nullable=False),
        sa.Column("value", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("updated_at", billops.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "governed_actions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", billops.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("workflow_id", sa.String(length=300), nullable=False),
        sa.Column("step", sa.String(length=80), nullable=False),
        sa.Column("platform", sa.String(length=20), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("detail", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("governed_actions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_governed_actions_workflow_id"), ["workflow_id"], unique=False)
        batch_op.create_index("ix_governed_customer_time", ["platform", "customer_id", "at"], unique=False)
        batch_op.create_index("ix_governed_time", ["at"], unique=False)

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=True),
        sa.Column("created_at", billops.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("revoked_at", billops.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", billops.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_login_at", billops.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=200), nullable=False),
        sa.Column("created_at", billops.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", billops.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", billops.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", billops.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_tokens_user_id"), ["user_id"], unique=False)

    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", billops.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", billops.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", billops.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id_hash"),
    )
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_console_sessions_user_id"), ["user_id"], unique=False)

    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "guardrails",
                sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                nullable=False,
                server_default="[]",
            )
        )
        batch_op.add_column(
            sa.Column(
                "edits",
                sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                nullable=False,
                server_default="{}",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_column("edits")
        batch_op.drop_column("guardrails")

    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_console_sessions_user_id"))

    op.drop_table("console_sessions")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_tokens_user_id"))

    op.drop_table("api_tokens")
    op.drop_table("users")
    with op.batch_alter_table("governed_actions", schema=None) as batch_op:
        batch_op.drop_index("ix_governed_time")
        batch_op.drop_index("ix_governed_customer_time")
        batch_op.drop_index(batch_op.f("ix_governed_actions_workflow_id"))

    op.drop_table("governed_actions")
    op.drop_table("governance_state")
    with op.batch_alter_table("feedback_labels", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feedback_labels_workflow_id"))

    op.drop_table("feedback_labels")
