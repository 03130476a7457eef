"""TrainConfig: everything one training run needs, validated once, frozen.

The CLI parses strings ("2:32,4:64") into this; the library reads only this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from funnel.errors import InputError

SCHEMES = ("matryoshka", "2d", "starbucks", "none")
LOSSES = ("mnrl", "cached-mnrl", "cosent", "gist", "distill")
STATIC_INITS = ("tokenizer", "distill")

# Starbucks' published schedule for a 12-layer, 768-dim model; scaled to the model being trained.
STARBUCKS_REFERENCE = ((2, 32), (4, 64), (6, 128), (8, 256), (10, 512), (12, 768))


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    ``model`` is a local sentence-transformers folder (None: the offline all-MiniLM-L6-v2); with
    ``static`` set, a StaticEmbedding model is built instead, from the MiniLM tokenizer
    ("tokenizer", random ``static_dim``-dim vectors) or distilled from ``model`` with model2vec
    ("distill"). ``data`` holds one or more JSONL/parquet files or BEIR folders (see
    :mod:`funnel.training.data`).

    Nesting: ``scheme`` "matryoshka" trains every dim in ``dims`` (weights ``dim_weights``);
    "2d" adds a random sub-layer per step (Matryoshka2dLoss); "starbucks" trains every
    (layer, dim) in ``layer_dim_pairs`` at every step, summed with ``pair_weights``.
    ``frozen_layers`` > 0 keeps the word embeddings and the first that many transformer layers
    fixed: on a CPU the backward pass then stops early, so a step costs much less.
    Defaults (None) are derived from the model: dims halve from full down to 32, Starbucks pairs
    scale STARBUCKS_REFERENCE to the model's depth and width. ``fold_rotation``: an index built
    with ``model`` whose stored rotation is appended to the model as a bias-free ``Dense`` layer,
    so training starts from prefixes as good as the index's (PCA's) rather than the model's order.
    """

    data: tuple[Path, ...]
    output: Path
    model: str | None = None
    fold_rotation: Path | None = None
    static: str | None = None
    static_dim: int = 1024
    scheme: str = "matryoshka"
    dims: tuple[int, ...] | None = None
    dim_weights: tuple[float, ...] | None = None
    layer_dim_pairs: tuple[tuple[int, int], ...] | None = None
    pair_weights: tuple[float, ...] | None = None
    loss: str = "mnrl"
    guide_model: str | None = None
    distill_temperature: float = 0.05
    mini_batch_size: int = 32
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    epochs: float = 1.0
    max_steps: int | None = None
    max_minutes: float | None = None
    max_pairs: int | None = None
    max_seq_length: int | None = 128
    frozen_layers: int = 0
    seed: int = 12
    hard_negatives: int = 0
    mining_margin: float | None = 0.05
    remine_every: int = 0
    remine_factor: float = 1.15
    remine_floor: float = 0.8
    checkpoint_every: int = 0
    resume: bool = False
    fp16: bool = False
    show_progress: bool = True
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", tuple(Path(p) for p in self.data))
        object.__setattr__(self, "output", Path(self.output))
        if not self.data:
            raise InputError("no training data: give at least one JSONL/parquet file or BEIR folder")
        if self.scheme not in SCHEMES:
            raise InputError(f"unknown scheme {self.scheme!r}: choose one of {', '.join(SCHEMES)}")
        if self.loss not in LOSSES:
            raise InputError(f"unknown loss {self.loss!r}: choose one of {', '.join(LOSSES)}")
        if self.static is not None and self.static not in STATIC_INITS:
            raise InputError(f"unknown static init {self.static!r}: choose one of {', '.join(STATIC_INITS)}")
        if self.static is not None and self.scheme in ("2d", "starbucks"):
            raise InputError(f"a static model has no layers: scheme {self.scheme!r} needs a transformer; use matryoshka")
        if self.loss == "gist" and self.guide_model is None:
            raise InputError("loss 'gist' needs a guide model (guide_model / --guide-model)")
        for name in ("batch_size", "mini_batch_size", "static_dim"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise InputError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise InputError(f"max_pairs must be at least 1, got {self.max_pairs}")
        if self.dims is not None:
            if not self.dims or any(d < 1 for d in self.dims):
                raise InputError(f"dims must be positive integers, got {list(self.dims)}")
            if self.dim_weights is not None and len(self.dim_weights) != len(self.dims):
                raise InputError(f"{len(self.dim_weights)} dim weights for {len(self.dims)} dims: give one weight per dim")
        elif self.dim_weights is not None:
            raise InputError("dim_weights given without dims: give the dims they weigh")
        if self.layer_dim_pairs is not None:
            pairs = self.layer_dim_pairs
            if not pairs or any(layer < 1 or dim < 1 for layer, dim in pairs):
                raise InputError(f"layer:dim pairs must be positive, got {[list(p) for p in pairs]}")
            if self.pair_weights is not None and len(self.pair_weights) != len(pairs):
                raise InputError(f"{len(self.pair_weights)} pair weights for {len(pairs)} layer:dim pairs")
        if self.frozen_layers < 0:
            raise InputError(f"frozen_layers must be 0 or more, got {self.frozen_layers}")
        if self.frozen_layers and self.scheme in ("2d", "starbucks"):
            raise InputError(f"scheme {self.scheme!r} trains the first layers: do not freeze them (frozen_layers=0)")
        if self.hard_negatives < 0 or self.remine_every < 0 or self.checkpoint_every < 0:
            raise InputError("hard_negatives, remine_every and checkpoint_every must be 0 or more")
        if self.remine_every and not self.hard_negatives:
            raise InputError("remine_every needs mined negatives: set hard_negatives to 1 or more")
        if self.remine_factor < 1 or not 0 < self.remine_floor <= 1:
            raise InputError(f"remine_factor must be >= 1 and remine_floor in (0, 1]; got {self.remine_factor}, {self.remine_floor}")


def default_dims(full_dim: int, smallest: int = 32) -> tuple[int, ...]:
    """The full width, then the powers of two below it down to ``smallest``: 384 -> (384, 256, 128, 64, 32)."""
    dims = [full_dim]
    power = 1 << (full_dim - 1).bit_length() - 1
    while power >= smallest:
        if power < full_dim:
            dims.append(power)
        power //= 2
    return tuple(dims)


def scaled_starbucks_pairs(num_layers: int, full_dim: int) -> tuple[tuple[int, int], ...]:
    """STARBUCKS_REFERENCE scaled to a model of ``num_layers`` layers and ``full_dim`` dims.

    6 layers x 384 dims -> (1, 16), (2, 32), (3, 64), (4, 128), (5, 256), (6, 384). Duplicates
    (shallow, narrow models) are dropped; the last pair is always the full model.
    """
    ref_layers, ref_dim = STARBUCKS_REFERENCE[-1]
    pairs: list[tuple[int, int]] = []
    for layer, dim in STARBUCKS_REFERENCE:
        pair = (max(1, round(layer * num_layers / ref_layers)), max(1, round(dim * full_dim / ref_dim)))
        if pair not in pairs:
            pairs.append(pair)
    pairs[-1] = (num_layers, full_dim)
    return tuple(pairs)
