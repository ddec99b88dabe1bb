"""inbox: inbox_hold, what each quarantined message waits for

Revision ID: 0010
Revises: 0009

A registry change put the whole quarantine back in the queue; with what each quarantined message
waits for recorded (the device/patient identifiers it could not resolve), a change releases only
the messages waiting for the identifiers it touched (hub.store.quarantine). Messages quarantined
before this revision have no record of what they wait for: each gets the hold ``*`` ("any
registry change"), so the next change releases them as before and nothing already held is
stranded; processed again, they record what they wait for.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbox_hold",
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("res_type", sa.String(length=16), nullable=False),
        sa.Column("system", sa.String(length=200), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("message_id", "res_type", "system", "value"),
    )
    op.create_index("ix_inbox_hold_key", "inbox_hold", ["res_type", "system", "value"])
    # Rows quarantined before this revision wait for any change (the key hub.store.quarantine
    # calls ANY), as they did: released by the next registry change, whatever it touches.
    op.execute("INSERT INTO inbox_hold (message_id, res_type, system, value) "
               "SELECT id, '*', '', '' FROM inbound_message WHERE status = 'quarantined'")


def downgrade() -> None:
    op.drop_index("ix_inbox_hold_key", table_name="inbox_hold")
    op.drop_table("inbox_hold")
