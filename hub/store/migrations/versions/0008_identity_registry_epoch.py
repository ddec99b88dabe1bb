"""identity: registry_epoch, the counter that tells every process its identity cache is stale

Revision ID: 0008
Revises: 0007

A patient merge (ADT^A40) moves identifier bindings; each worker process caches identifier → id.
The merge bumps this counter in its transaction, and every worker batch reads it (on PostgreSQL
``FOR SHARE``, so a merge waits for batches that used the old bindings) and drops its cache when
it changed. One row, id 1, created here.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "registry_epoch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(table, [{"id": 1, "epoch": 0}])


def downgrade() -> None:
    op.drop_table("registry_epoch")
