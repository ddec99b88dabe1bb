"""api_key.rate_limit: a client's own request-rate limit (e.g. "20/second;1000/minute")

Revision ID: 0012
Revises: 0011

NULL: the key has none of its own and the process default (``HUB_RATE_LIMIT``) applies.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rate_limit", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.drop_column("rate_limit")
