"""initial schema: chips, sweeps, probe results, job events, verdicts, quarantine events

Revision ID: 0001
Revises: 
Create Date: 2026-11-28
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0001'
down_revision: Union[str, None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('chips',
    sa.Column('chip_id', sa.String(length=128), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('vendor', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=255), nullable=False),
    sa.Column('memory_bytes', sa.BigInteger(), nullable=False),
    sa.Column('stack', sa.JSON(), nullable=False),
    sa.Column('stack_hash', sa.String(length=64), nullable=False),
    sa.Column('observed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('chip_id', name=op.f('pk_chips'))
    )
    with op.batch_alter_table('chips', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chips_host'), ['host'], unique=False)

    op.create_table('job_events',
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.String(length=255), nullable=False),
    sa.Column('step', sa.BigInteger(), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('world_size', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('diagnosis', sa.String(length=16), nullable=False),
    sa.Column('observed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('chip_id', sa.String(length=128), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_job_events'))
    )
    with op.batch_alter_table('job_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_events_chip_id'), ['chip_id'], unique=False)
        batch_op.create_index('ix_job_events_job_step', ['job_id', 'step'], unique=False)
        batch_op.create_index(batch_op.f('ix_job_events_observed_at'), ['observed_at'], unique=False)

    op.create_table('quarantine_events',
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('chip_id', sa.String(length=128), nullable=False),
    sa.Column('from_state', sa.String(length=16), nullable=False),
    sa.Column('to_state', sa.String(length=16), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('verdict_id', sa.String(length=64), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_quarantine_events'))
    )
    with op.batch_alter_table('quarantine_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_quarantine_events_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_quarantine_events_chip_id'), ['chip_id'], unique=False)

    op.create_table('sweeps',
    sa.Column('sweep_id', sa.String(length=64), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('suite', sa.String(length=64), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('sdc_version', sa.String(length=64), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('sweep_id', name=op.f('pk_sweeps'))
    )
    with op.batch_alter_table('sweeps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sweeps_host'), ['host'], unique=False)
        batch_op.create_index(batch_op.f('ix_sweeps_status'), ['status'], unique=False)

    op.create_table('verdicts',
    sa.Column('verdict_id', sa.String(length=64), nullable=False),
    sa.Column('analysis_id', sa.String(length=64), nullable=False),
    sa.Column('chip_id', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('k', sa.Integer(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('statistic', sa.Float(), nullable=True),
    sa.Column('p_value', sa.Float(), nullable=True),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('first_seen', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=True),
    sa.Column('evidence_ids', sa.JSON(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('verdict_id', name=op.f('pk_verdicts'))
    )
    with op.batch_alter_table('verdicts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_verdicts_analysis_id'), ['analysis_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_verdicts_chip_id'), ['chip_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_verdicts_created_at'), ['created_at'], unique=False)

    op.create_table('probe_results',
    sa.Column('result_id', sa.String(length=64), nullable=False),
    sa.Column('sweep_id', sa.String(length=64), nullable=False),
    sa.Column('chip_id', sa.String(length=128), nullable=False),
    sa.Column('probe', sa.String(length=128), nullable=False),
    sa.Column('probe_version', sa.Integer(), nullable=False),
    sa.Column('case', sa.JSON(), nullable=False),
    sa.Column('case_key', sa.Text(), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('stack_hash', sa.String(length=64), nullable=False),
    sa.Column('repeats', sa.Integer(), nullable=False),
    sa.Column('distinct_repeat_digests', sa.Integer(), nullable=False),
    sa.Column('timings', sa.JSON(), nullable=False),
    sa.Column('observed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('digest', sa.String(length=128), nullable=True),
    sa.Column('reference_digest', sa.String(length=128), nullable=True),
    sa.Column('max_abs_err', sa.Float(), nullable=True),
    sa.Column('max_rel_err', sa.Float(), nullable=True),
    sa.Column('error_bound', sa.Float(), nullable=True),
    sa.Column('throughput', sa.Float(), nullable=True),
    sa.Column('throughput_unit', sa.String(length=32), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('telemetry', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['chip_id'], ['chips.chip_id'], name=op.f('fk_probe_results_chip_id_chips')),
    sa.ForeignKeyConstraint(['sweep_id'], ['sweeps.sweep_id'], name=op.f('fk_probe_results_sweep_id_sweeps')),
    sa.PrimaryKeyConstraint('result_id', name=op.f('pk_probe_results'))
    )
    with op.batch_alter_table('probe_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_probe_results_chip_id'), ['chip_id'], unique=False)
        batch_op.create_index('ix_probe_results_cohort', ['probe', 'probe_version', 'case_key', 'seed'], unique=False)
        batch_op.create_index(batch_op.f('ix_probe_results_observed_at'), ['observed_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_probe_results_sweep_id'), ['sweep_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('probe_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_probe_results_sweep_id'))
        batch_op.drop_index(batch_op.f('ix_probe_results_observed_at'))
        batch_op.drop_index('ix_probe_results_cohort')
        batch_op.drop_index(batch_op.f('ix_probe_results_chip_id'))

    op.drop_table('probe_results')
    with op.batch_alter_table('verdicts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_verdicts_created_at'))
        batch_op.drop_index(batch_op.f('ix_verdicts_chip_id'))
        batch_op.drop_index(batch_op.f('ix_verdicts_analysis_id'))

    op.drop_table('verdicts')
    with op.batch_alter_table('sweeps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sweeps_status'))
        batch_op.drop_index(batch_op.f('ix_sweeps_host'))

    op.drop_table('sweeps')
    with op.batch_alter_table('quarantine_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_quarantine_events_chip_id'))
        batch_op.drop_index(batch_op.f('ix_quarantine_events_at'))

    op.drop_table('quarantine_events')
    with op.batch_alter_table('job_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_events_observed_at'))
        batch_op.drop_index('ix_job_events_job_step')
        batch_op.drop_index(batch_op.f('ix_job_events_chip_id'))

    op.drop_table('job_events')
    with op.batch_alter_table('chips', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chips_host'))

    op.drop_table('chips')
