"""audit chain keyed with HMAC (key id per record) and checkpoints

Revision ID: 0006
Revises: 0005

Adds `audit_log.key_id`. Records written before this migration keep key_id NULL and their plain sha256
hashes: `billops audit verify` checks them as the legacy chain, and the first keyed record's HMAC covers
the last legacy hash, so the legacy prefix cannot be changed later without breaking it. The migration
needs no key (keys live outside the database). Downgrading drops the column: keyed records then no
longer verify as a sha256 chain.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("key_id", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("key_id")
