"""rules: one state row per patient (rule_patient_state) instead of one per patient and rule

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-21 10:00:00

The rules stage read every state row of a message's patients and wrote back one row per rule
the message moved (4-5 for a one-reading message); one row per patient holding every rule's
state as lines ``<rule id>\\t<state JSON>`` is one row read and one written (bench/rules.py,
docs/rules.md "Cost on the ingest path"). Existing states are carried over.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = sa.table('rule_state', sa.column('patient_id', sa.String), sa.column('rule_id', sa.String),
                sa.column('state', sa.Text), sa.column('updated_at', sa.DateTime(timezone=True)))
_NEW = sa.table('rule_patient_state', sa.column('patient_id', sa.String),
                sa.column('states', sa.Text), sa.column('updated_at', sa.DateTime(timezone=True)))


def upgrade() -> None:
    op.create_table('rule_patient_state',
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('states', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('patient_id')
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(_OLD.c.patient_id, _OLD.c.rule_id, _OLD.c.state)
                        .order_by(_OLD.c.patient_id, _OLD.c.rule_id)).all()
    lines: dict[str, list[str]] = {}
    for patient, rule, state in rows:
        lines.setdefault(patient, []).append(f"{rule}\t{state}")
    now = datetime.now(UTC)
    if lines:
        op.bulk_insert(_NEW, [{"patient_id": p, "states": "\n".join(v), "updated_at": now}
                              for p, v in lines.items()])
    op.drop_table('rule_state')


def downgrade() -> None:
    op.create_table('rule_state',
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('rule_id', sa.String(length=64), nullable=False),
    sa.Column('state', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('patient_id', 'rule_id')
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(_NEW.c.patient_id, _NEW.c.states)).all()
    now = datetime.now(UTC)
    old = [{"patient_id": p, "rule_id": line.split("\t", 1)[0],
            "state": line.split("\t", 1)[1], "updated_at": now}
           for p, text in rows if text for line in text.split("\n")]
    if old:
        op.bulk_insert(_OLD, old)
    op.drop_table('rule_patient_state')
