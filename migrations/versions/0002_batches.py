"""Batches of prompts, their lines, uploaded files, and idempotent job submission.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(255), nullable=True))
        batch.create_unique_constraint("uq_jobs_idempotency_key", ["idempotency_key"])
    op.create_index("ix_jobs_queue_status", "jobs", ["queue", "status", "priority"])
    op.create_table(
        "files",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("input_file_id", sa.String(64), nullable=True),
        sa.Column("completion_window", sa.String(16), nullable=False, server_default="24h"),
        sa.Column("metadata", sa.JSON, nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True, unique=True),
        sa.Column("total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("fed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("errors", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("in_progress_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finalizing_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelling_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "batch_lines",
        sa.Column("batch_id", sa.String(64), sa.ForeignKey("batches.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("line", sa.Integer, primary_key=True),
        sa.Column("custom_id", sa.String(255), nullable=True),
        sa.Column("kind", sa.String(16), nullable=True),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("body", sa.JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("job_id", sa.String(32), nullable=True),
    )
    op.create_index("ix_batch_lines_pending", "batch_lines", ["batch_id", "job_id", "line"])


def downgrade() -> None:
    op.drop_index("ix_batch_lines_pending", table_name="batch_lines")
    op.drop_table("batch_lines")
    op.drop_table("batches")
    op.drop_table("files")
    op.drop_index("ix_jobs_queue_status", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("uq_jobs_idempotency_key", type_="unique")
        batch.drop_column("idempotency_key")
