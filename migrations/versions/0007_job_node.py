"""Job nodes: the Celery node name of the worker that ran a job, beside its host.

Two workers on one machine share a host name, so worker_host alone cannot say which of them
ran a job; worker_node (e.g. "corral-1234@vm") can, and matches `corral workers`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("worker_node", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("worker_node")
