"""funnel's benchmarks: scripts run from the repository root as ``python -m benchmarks.<name>``.

Nothing here is imported by funnel. What they share (paths, the dataset registry, the result
schema, the machine record, building an index from vectors, timing, recall) is in
:mod:`benchmarks.common`.
"""
