"""Job replies: a finished chat or generate job's answer as the faces split it.

output keeps what the model wrote, reasoning tags and tool-call markup included; reply keeps
the answer a client was sent: {"content", "thinking"?, "tool_calls"?, "logprobs"?}. A later
turn (/v1/responses' previous_response_id), GET /v1/responses/{id} and a batch's output file
rebuild answers from it, so they say what the live answer said without parsing again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("reply", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("reply")
