"""Create the jobs table: one row per generate/chat/embed request and what happened to it.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("batch_id", sa.String(64), nullable=True),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("output", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("done_reason", sa.String(16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("prompt_eval_count", sa.Integer, nullable=True),
        sa.Column("prompt_eval_duration", sa.BigInteger, nullable=True),
        sa.Column("eval_count", sa.Integer, nullable=True),
        sa.Column("eval_duration", sa.BigInteger, nullable=True),
        sa.Column("load_duration", sa.BigInteger, nullable=True),
        sa.Column("total_duration", sa.BigInteger, nullable=True),
        sa.Column("first_token_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker_host", sa.String(255), nullable=True),
        sa.Column("device", sa.String(32), nullable=True),
    )
    op.create_index("ix_jobs_status_created", "jobs", ["status", "created_at"])
    op.create_index("ix_jobs_model_created", "jobs", ["model", "created_at"])
    op.create_index("ix_jobs_batch", "jobs", ["batch_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_batch", table_name="jobs")
    op.drop_index("ix_jobs_model_created", table_name="jobs")
    op.drop_index("ix_jobs_status_created", table_name="jobs")
    op.drop_table("jobs")
