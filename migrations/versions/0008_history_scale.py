"""History at scale: rollups for the report, and indexes for every way jobs are listed.

`job_rollups` holds the report's figures per (period, start, model, concurrency), its
histograms as text ("first bin,counts..."), and `job_rollup_marks` how far each period is
rolled (service.history.rollups), so `corral report` reads a few hundred rows instead of
every job, and keeps its figures after CORRAL_RETENTION drops old jobs. The job indexes end
in (created_at, id), the order GET /jobs pages in, so a page is an index range at any size;
finished_at serves the rollups and the retention sweep.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# (name, columns) of the indexes this revision adds, and those it replaces.
ADDED = (
    ("ix_jobs_created_id", ["created_at", "id"]),
    ("ix_jobs_status_created_id", ["status", "created_at", "id"]),
    ("ix_jobs_model_created_id", ["model", "created_at", "id"]),
    ("ix_jobs_batch_created_id", ["batch_id", "created_at", "id"]),
    ("ix_jobs_owner_created_id", ["owner", "created_at", "id"]),
    ("ix_jobs_finished", ["finished_at"]),
)
REPLACED = (
    ("ix_jobs_status_created", ["status", "created_at"]),
    ("ix_jobs_model_created", ["model", "created_at"]),
    ("ix_jobs_batch", ["batch_id"]),
    ("ix_jobs_owner", ["owner", "created_at"]),
)


def upgrade() -> None:
    op.create_table(
        "job_rollups",
        sa.Column("period", sa.Integer, primary_key=True),
        sa.Column("start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("model", sa.String(255), primary_key=True),
        sa.Column("concurrency", sa.Integer, primary_key=True),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
        sa.Column("rate_sum", sa.Float, nullable=False),
        sa.Column("rated", sa.Integer, nullable=False),
        sa.Column("busy_s", sa.Float, nullable=False),
        sa.Column("ttft", sa.Text, nullable=False),
        sa.Column("latency", sa.Text, nullable=False),
        sa.Column("wait", sa.Text, nullable=False),
    )
    op.create_table(
        "job_rollup_marks",
        sa.Column("period", sa.Integer, primary_key=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
    )
    for name, columns in ADDED:
        op.create_index(name, "jobs", columns)
    for name, _ in REPLACED:
        op.drop_index(name, table_name="jobs")


def downgrade() -> None:
    for name, columns in REPLACED:
        op.create_index(name, "jobs", columns)
    for name, _ in ADDED:
        op.drop_index(name, table_name="jobs")
    op.drop_table("job_rollup_marks")
    op.drop_table("job_rollups")
