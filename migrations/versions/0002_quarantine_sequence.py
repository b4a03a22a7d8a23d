"""quarantine sequence: the store's own order of quarantine events

A chip's current state is its latest quarantine event. Ordering by the event's ``at`` lets a
wrong clock decide (a release stamped 2099 would stay latest for ever), so the database
numbers events as it stores them: ``quarantine_sequence`` gets one row per stored event from
an AFTER INSERT trigger (a replayed, ignored duplicate gets none), and readers order by it.
Existing events are numbered by (at, event_id), their order until now.

Revision ID: 0002_qseq
Revises: 0001
Create Date: 2026-12-01
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0002_qseq"
down_revision: Union[str, None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

TRIGGER = "quarantine_sequence_after_insert"


def upgrade() -> None:
    op.create_table(
        "quarantine_sequence",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_quarantine_sequence")),
        sa.UniqueConstraint("event_id", name=op.f("uq_quarantine_sequence_event_id")),
    )
    op.execute("INSERT INTO quarantine_sequence (event_id) SELECT event_id FROM quarantine_events ORDER BY at, event_id")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION sdc_number_quarantine_event() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN INSERT INTO quarantine_sequence (event_id) VALUES (NEW.event_id); RETURN NULL; END $$"
        )
        op.execute(f"CREATE TRIGGER {TRIGGER} AFTER INSERT ON quarantine_events FOR EACH ROW EXECUTE FUNCTION sdc_number_quarantine_event()")
    else:
        op.execute(
            f"CREATE TRIGGER {TRIGGER} AFTER INSERT ON quarantine_events FOR EACH ROW "
            "BEGIN INSERT INTO quarantine_sequence (event_id) VALUES (NEW.event_id); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON quarantine_events")
        op.execute("DROP FUNCTION IF EXISTS sdc_number_quarantine_event()")
    else:
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
    op.drop_table("quarantine_sequence")
