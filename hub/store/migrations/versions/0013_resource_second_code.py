"""resource.second_code: a resource's second coding in its row, not in resource_token

Revision ID: 0013
Revises: 0012

Dual-coded resources (every PCD-01 vital sign: LOINC and its IEEE 11073 MDC code) wrote their
second coding as a ``resource_token`` row, whose primary key begins with the random resource id:
one 512-message HL7v2 commit rewrote 484 pages of that index (of 1,264 pages in all;
``bench.commit_pages``), and more as the table grows. In the resource's own row, indexed by
(res_type, second_code), new entries of one code go to the end of that code's range.

Existing rows move to the new layout, so that every row holds what the hub now writes for it
(a rewrite of an unchanged resource rewrites its tokens but not its row): ``second_code`` and
``second_code_system`` from ``code.coding[1]`` of the stored content, and the token of that
coding deleted. Other codings stay tokens. Downgrade puts the second codings back as tokens.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HAS_TOKENS = ("EXISTS (SELECT 1 FROM resource_token t WHERE t.res_type = resource.res_type "
               "AND t.res_id = resource.res_id AND t.param = 'code')")


def _second(field: str) -> str:
    """SQL for ``code.coding[1].<field>`` of the stored content, on this database."""
    if op.get_bind().dialect.name == "postgresql":
        return f"(content::jsonb #>> '{{code,coding,1,{field}}}')"
    return f"json_extract(content, '$.code.coding[1].{field}')"


def upgrade() -> None:
    with op.batch_alter_table("resource", schema=None) as batch_op:
        batch_op.add_column(sa.Column("second_code_system", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("second_code", sa.String(length=128), nullable=True))
    # Only resources with tokens have a second coding with a code (tokens were written for
    # every coding after the first that has one).
    op.execute(f"UPDATE resource SET second_code = NULLIF({_second('code')}, '') "
               f"WHERE {_HAS_TOKENS}")
    op.execute(f"UPDATE resource SET second_code_system = {_second('system')} "
               "WHERE second_code IS NOT NULL")
    op.execute("DELETE FROM resource_token WHERE param = 'code' AND EXISTS (SELECT 1 FROM "
               "resource r WHERE r.res_type = resource_token.res_type AND r.res_id = "
               "resource_token.res_id AND r.second_code = resource_token.code AND "
               "coalesce(r.second_code_system, '') = resource_token.system)")
    op.create_index("ix_resource_type_second_code", "resource", ["res_type", "second_code"])


def downgrade() -> None:
    op.drop_index("ix_resource_type_second_code", table_name="resource")
    op.execute("INSERT INTO resource_token (res_type, res_id, param, system, code) "
               "SELECT res_type, res_id, 'code', coalesce(second_code_system, ''), second_code "
               "FROM resource WHERE second_code IS NOT NULL AND second_code <> '' "
               "ON CONFLICT DO NOTHING")
    with op.batch_alter_table("resource", schema=None) as batch_op:
        batch_op.drop_column("second_code")
        batch_op.drop_column("second_code_system")
