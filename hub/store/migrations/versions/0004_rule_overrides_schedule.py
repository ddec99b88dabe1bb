"""rules: per-patient rule overrides and the schedule of time-based rule evaluations

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 09:00:00

rule_override holds the parameters a care team set for one patient and one rule (API);
rule_schedule holds when a time-based rule (missed doses, silence, daily summaries, resolving a
cleared Flag) must next run for a patient, indexed on due_at so the scheduler reads only what is
due.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('rule_override',
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('rule_id', sa.String(length=64), nullable=False),
    sa.Column('params', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('patient_id', 'rule_id')
    )
    op.create_table('rule_schedule',
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('rule_id', sa.String(length=64), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('patient_id', 'rule_id')
    )
    with op.batch_alter_table('rule_schedule', schema=None) as batch_op:
        batch_op.create_index('ix_rule_schedule_due', ['due_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('rule_schedule', schema=None) as batch_op:
        batch_op.drop_index('ix_rule_schedule_due')
    op.drop_table('rule_schedule')
    op.drop_table('rule_override')
