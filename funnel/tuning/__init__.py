"""Tune the funnel for a recall target: calibration queries, the plan search space, the tuner."""

from __future__ import annotations

from funnel.tuning.tuner import PlanMeasurement, TunedPlan, TuneOptions, tune

__all__ = ["PlanMeasurement", "TuneOptions", "TunedPlan", "tune"]
