"""API keys, and the key that owns each job, batch and file.

api_keys holds a hash of each key, never the key: the secret is shown once, when it is
created. owner is the id of the key a job, batch or file was made with (NULL when keys were
not in use); a user key sees only its own.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OWNED = ("jobs", "batches", "files")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, index=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("models", sa.JSON, nullable=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    for table in OWNED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("owner", sa.String(32), nullable=True))
        op.create_index(f"ix_{table}_owner", table, ["owner", "created_at"])


def downgrade() -> None:
    for table in OWNED:
        op.drop_index(f"ix_{table}_owner", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("owner")
    op.drop_table("api_keys")
