"""Feedback that can be reviewed: a preference between two responses, where an item came from
(a person, a rail flag, a low-confidence answer), and who reviewed it when.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("other_request_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("origin", sa.String(length=16), nullable=False, server_default="user"))
        batch.add_column(sa.Column("reviewed_by", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_foreign_key(
            op.f("fk_feedback_reviewed_by_api_keys"), "api_keys", ["reviewed_by"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_constraint(op.f("fk_feedback_reviewed_by_api_keys"), type_="foreignkey")
        batch.drop_column("reviewed_at")
        batch.drop_column("reviewed_by")
        batch.drop_column("origin")
        batch.drop_column("other_request_id")
