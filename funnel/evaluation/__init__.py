"""Evaluation: datasets, metrics, compute accounting, sweeps, reports and plots.

``from funnel.evaluation import evaluate`` loads the harness on first use, so importing this
package stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["evaluate", "EvalOptions", "Configuration", "EvaluationReport"]


def __getattr__(name: str) -> Any:
    if name in ("evaluate", "EvalOptions"):
        from funnel.evaluation import harness

        return getattr(harness, name)
    if name == "Configuration":
        from funnel.evaluation.sweep import Configuration

        return Configuration
    if name == "EvaluationReport":
        from funnel.evaluation.report import EvaluationReport

        return EvaluationReport
    raise AttributeError(f"module 'funnel.evaluation' has no attribute {name!r}")
