"""login and token throttling (per client and per account back-off), keyed token hashes

Revision ID: 0005
Revises: 0004

- New table `login_throttles`: failed console logins per (account, client), per client and per account,
  with an exponential back-off instead of the hard account lock of 0003.
- Existing rows: every hard lock is lifted (`users.failed_logins = 0`, `locked_until = NULL`); those
  columns are no longer written. API token hashes stay as they are: an argon2 hash (`$argon2…`) is
  verified once with argon2 at the token's next use and then re-stored as a keyed HMAC-SHA256
  (`hmac-sha256:<key id>:<hex>`); the secret itself was never stored, so nothing else can be done here.
"""

import sqlalchemy as sa
from alembic import op

import billops.store.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_throttles",
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("account", sa.String(length=100), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("first_failure_at", billops.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_failure_at", billops.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", billops.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("unaudited", sa.Integer(), nullable=False),
        sa.Column("audited_at", billops.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("scope", "account", "client"),
    )
    with op.batch_alter_table("login_throttles", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_login_throttles_last_failure_at"), ["last_failure_at"], unique=False
        )
    users = sa.table("users", sa.column("failed_logins", sa.Integer()), sa.column("locked_until"))
    op.execute(sa.update(users).values(failed_logins=0, locked_until=None))


def downgrade() -> None:
    with op.batch_alter_table("login_throttles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_throttles_last_failure_at"))
    op.drop_table("login_throttles")
