"""analyses: one row per stored analysis run

"Latest" in the report and the hand-offs means the fleet's latest analysis. An analysis
that finds nothing stores no verdict, so without a row of its own an older verdict would
stay "latest" for ever (a chip flagged, ``sdc report`` exiting 1, on evidence a newer
analysis no longer supports). Each non-dry-run ``sdc analyze`` records its run here.

Revision ID: 0003_analyses
Revises: 0002_qseq
Create Date: 2026-12-01
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0003_analyses"
down_revision: Union[str, None] = "0002_qseq"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "analyses",
        sa.Column("analysis_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("chips", sa.Integer(), nullable=False),
        sa.Column("results", sa.Integer(), nullable=False),
        sa.Column("verdicts", sa.Integer(), nullable=False),
        sa.Column("breaker_tripped", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("analysis_id", name=op.f("pk_analyses")),
    )
    op.create_index(op.f("ix_analyses_created_at"), "analyses", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_analyses_created_at"), table_name="analyses")
    op.drop_table("analyses")
