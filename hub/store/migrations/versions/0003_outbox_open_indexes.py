"""outbox: partial indexes over open rows for the sync claim

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-21 06:10:00

The sync worker (hub/store/delivery.py) claims due rows in id order and checks that no earlier
open row of the same patient (order_key) is waiting. Both queries touch open rows only
('pending', 'inflight'); partial indexes keep them independent of the delivered history.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = sa.text("status IN ('pending', 'inflight')")


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_open', ['destination', 'id'], unique=False,
                              sqlite_where=_OPEN, postgresql_where=_OPEN)
        batch_op.create_index('ix_outbox_open_key', ['destination', 'order_key', 'id'],
                              unique=False, sqlite_where=_OPEN, postgresql_where=_OPEN)


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_open_key')
        batch_op.drop_index('ix_outbox_open')
