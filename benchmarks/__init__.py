"""funnel's benchmarks: scripts run from the repository root as ``python -m benchmarks.<name>``.

Nothing here is imported by funnel. Shared helpers (paths, the command line, the machine record)
are in :mod:`benchmarks.common`.
"""
