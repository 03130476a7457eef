"""Train nested-embedding models: Matryoshka, 2D Matryoshka, Starbucks, static.

``train(config)`` is the whole public surface; everything heavy loads on first call.
"""

from __future__ import annotations

from pathlib import Path

from funnel.training.config import TrainConfig

__all__ = ["TrainConfig", "train"]


def train(config: TrainConfig) -> Path:
    """Train a model as ``config`` says and save it with funnel's metadata; returns its folder."""
    from funnel.training.trainer import run_training

    return run_training(config)
