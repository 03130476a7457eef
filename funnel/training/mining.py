"""Hard negatives: mined once with the base model, then re-mined during training (Conan-embedding).

Conan-embedding (Li et al., 2024) keeps each negative's score from when it was mined. Every N
steps it scores the negatives again with the model being trained; a negative whose score has
fallen so far that ``score * factor < original`` and that is no longer close (``score < floor``)
has become easy, and is replaced by a fresh negative mined with the current model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from funnel.errors import InputError

if TYPE_CHECKING:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer

    from funnel.training.config import TrainConfig


def easy_negatives(original: np.ndarray, current: np.ndarray, factor: float = 1.15, floor: float = 0.8) -> np.ndarray:
    """Conan's drop rule: True where ``current * factor < original`` and ``current < floor``.

    ``original`` and ``current`` are cosine scores of the same negatives, any equal shapes.
    """
    original, current = np.asarray(original), np.asarray(current)
    if original.shape != current.shape:
        raise InputError(f"score shapes differ: original {original.shape}, current {current.shape}")
    return (current * factor < original) & (current < floor)


def mine_negatives(
    dataset: Dataset,
    model: SentenceTransformer,
    num_negatives: int,
    *,
    relative_margin: float | None = 0.05,
    batch_size: int = 64,
    show_progress: bool = False,
) -> tuple[Dataset, np.ndarray]:
    """Add ``num_negatives`` hard negatives per (anchor, positive) pair with sentence-transformers' miner.

    The corpus is every positive; a candidate scoring within ``relative_margin`` of the pair's own
    positive is skipped as a likely false negative. Returns the dataset with columns anchor,
    positive, negative_1..n (rows with too few candidates dropped) and the negatives' scores, an
    array of shape (rows, num_negatives). ``relative_margin=None`` keeps every candidate.
    """
    from sentence_transformers.util import mine_hard_negatives

    if "negative_1" in dataset.column_names:
        raise InputError("the training data already has negatives: mine only (anchor, positive) pairs")
    mined = mine_hard_negatives(
        dataset,
        model,
        anchor_column_name="anchor",
        positive_column_name="positive",
        num_negatives=num_negatives,
        relative_margin=relative_margin,
        sampling_strategy="top",
        output_format="n-tuple",
        output_scores=True,
        batch_size=batch_size,
        verbose=show_progress,
    )
    if len(mined) == 0:
        raise InputError(
            f"no pair kept {num_negatives} negatives scoring below {1 - (relative_margin or 0):.2f} x its positive's score: "
            "mine fewer negatives or lower the margin"
        )
    scores = np.asarray(mined["scores"], dtype=np.float32)[:, 1:]
    return mined.remove_columns("scores"), scores


class NegativePool:
    """The current negatives of every training row and the score each had when it was mined.

    Training reads rows through :meth:`transform` (``dataset.with_transform``), so a refresh
    changes what later batches see without rebuilding the dataset or the data loader.
    """

    def __init__(self, dataset: Dataset, scores: np.ndarray) -> None:
        self.negative_columns = [c for c in dataset.column_names if c.startswith("negative_")]
        if not self.negative_columns:
            raise InputError("re-mining needs mined negatives (columns negative_1..n)")
        self.anchors: list[str] = list(dataset["anchor"])
        self.positives: list[str] = list(dataset["positive"])
        self.negatives = np.array([dataset[c] for c in self.negative_columns], dtype=object).T
        self.scores = np.asarray(scores, dtype=np.float32).copy()
        if self.scores.shape != self.negatives.shape:
            raise InputError(f"{self.scores.shape} scores for {self.negatives.shape} negatives")
        self.corpus = sorted(set(self.positives) | set(self.negatives.ravel().tolist()))
        self.replaced = 0

    def dataset(self) -> Dataset:
        """Row ids and texts; the transform swaps in the current negatives when a batch is read."""
        from datasets import Dataset

        data: dict[str, Any] = {"anchor": self.anchors, "positive": self.positives}
        for i, column in enumerate(self.negative_columns):
            data[column] = self.negatives[:, i].tolist()
        data["row"] = list(range(len(self.anchors)))
        return Dataset.from_dict(data).with_transform(self.transform)

    def transform(self, batch: dict[str, list]) -> dict[str, list]:
        rows = batch["row"]
        out = {"anchor": batch["anchor"], "positive": batch["positive"]}
        for i, column in enumerate(self.negative_columns):
            out[column] = [self.negatives[r, i] for r in rows]
        return out

    def refresh(
        self,
        model: SentenceTransformer,
        *,
        factor: float = 1.15,
        floor: float = 0.8,
        relative_margin: float | None = 0.05,
        batch_size: int = 64,
    ) -> int:
        """Score every negative with ``model``; replace the easy ones by fresh top negatives.

        Returns how many negatives were replaced. A replacement is the best-scoring corpus text
        that is not the row's positive, not already one of its negatives, and not within
        ``relative_margin`` of the positive's score (a likely false negative).
        """
        encode = lambda texts: model.encode(  # noqa: E731
            texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        was_training = model.training
        model.eval()
        try:
            anchor_vectors = encode(self.anchors)
            flat = self.negatives.ravel().tolist()
            negative_vectors = encode(flat).reshape(*self.negatives.shape, -1)
            current = np.einsum("nd,nkd->nk", anchor_vectors, negative_vectors)
            drop = easy_negatives(self.scores, current, factor, floor)
            rows = np.flatnonzero(drop.any(axis=1))
            if rows.size == 0:
                return 0
            corpus_vectors = encode(self.corpus)
            positive_vectors = encode([self.positives[r] for r in rows])
        finally:
            model.train(was_training)
        index = {text: i for i, text in enumerate(self.corpus)}
        replaced = 0
        for row, anchor, positive in zip(rows, anchor_vectors[rows], positive_vectors):
            scores = corpus_vectors @ anchor
            if relative_margin is not None:
                scores[scores > (1 - relative_margin) * float(positive @ anchor)] = -np.inf
            scores[index[self.positives[row]]] = -np.inf
            for text in self.negatives[row]:
                scores[index[text]] = -np.inf
            for k in np.flatnonzero(drop[row]):
                best = int(np.argmax(scores))
                if not np.isfinite(scores[best]):
                    break
                self.negatives[row, k] = self.corpus[best]
                self.scores[row, k] = scores[best]
                scores[best] = -np.inf
                replaced += 1
        self.replaced += replaced
        return replaced


def remining_callback(pool: NegativePool, model: SentenceTransformer, config: TrainConfig):
    """A TrainerCallback that calls ``pool.refresh(model)`` every ``config.remine_every`` optimizer steps."""
    from transformers import TrainerCallback

    class ConanRemining(TrainerCallback):
        def __init__(self) -> None:
            self.history: list[tuple[int, int]] = []

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % config.remine_every == 0:
                replaced = pool.refresh(model, factor=config.remine_factor, floor=config.remine_floor, relative_margin=config.mining_margin)
                self.history.append((state.global_step, replaced))

    return ConanRemining()
