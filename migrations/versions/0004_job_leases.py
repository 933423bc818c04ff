"""Job leases: the worker that holds a running job, until when, and how often it was tried.

lease_owner/lease_expires_at: a worker renews its lease while it runs the job; a lapsed lease
means the worker is gone, and the job is handed to a live worker again. attempts counts the
times a worker took the job; lost_by lists the workers that held it and vanished.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("lease_owner", sa.String(255), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True),
                                   nullable=True))
        batch.add_column(sa.Column("lost_by", sa.JSON, nullable=True))
    op.create_index("ix_jobs_status_lease", "jobs", ["status", "lease_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_status_lease", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for name in ("lost_by", "lease_expires_at", "lease_owner", "attempts"):
            batch.drop_column(name)
