"""Hand-offs from the quarantine list to the systems operators already run.

``check`` (node-problem-detector, Slurm HealthCheckProgram / NHC), ``slurm`` (drain and
resume), ``k8s`` (cordon and taint) and ``prometheus`` (node_exporter textfile). Each reads
chip states through ``state.node_statuses`` and decides with pure functions; running external
commands sits behind a small Protocol so tests use canned output.
"""
