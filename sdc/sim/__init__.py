"""Synthetic fleets for tests, demos and benchmarks (``fleet``), and replays of stored fleets
through the analysis to grade it (``replay``)."""
