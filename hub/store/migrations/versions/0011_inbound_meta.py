"""inbound_message.meta: what the channel knew beside the body (an MQTT message's topic)

Revision ID: 0011
Revises: 0010

Kept with the raw message so that processing it again (a retry, a replay, a quarantine release)
sees what the first run saw: a device mapping may read the device id from ``meta.topic_levels``.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbound_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("meta", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbound_message", schema=None) as batch_op:
        batch_op.drop_column("meta")
