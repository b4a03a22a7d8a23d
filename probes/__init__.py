"""Probe kernels: one module per family (gemm, attention, conv, ...), the registry that finds
them, the harness that times and repeats them, and their fp64 references."""
