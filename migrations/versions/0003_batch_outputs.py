"""Batch columns the feeder and the OpenAI face need beyond 0002.

queue/priority: where a batch's lines are sent, fixed when the batch is created, so a worker
that feeds it needs no settings of the API that accepted it. output_file_id/error_file_id:
the files the OpenAI face produces once the batch ends. expired_at: OpenAI's batch field.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("queue", sa.String(64), nullable=False, server_default="cpu"))
        batch.add_column(sa.Column("priority", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("output_file_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("error_file_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        for name in ("expired_at", "error_file_id", "output_file_id", "priority", "queue"):
            batch.drop_column(name)
