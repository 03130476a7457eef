"""Queries made from a corpus's own text, where no real queries are given: a random span of
:data:`SPAN_WORDS` consecutive words of a sampled document's title and text (why spans, and not
a document's first sentence: :mod:`funnel.tuning.calibration`). The index build (to decide its
rotation) and the tuner (to calibrate a plan) sample the same way, with the same seeds."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from funnel.corpus import document_text

SPAN_WORDS = (5, 10)  # fewest and most words of a corpus-made query


def sample_positions(count: int, size: int, seed: int) -> np.ndarray:
    """``size`` distinct numbers out of ``range(count)``, sorted; the same for the same seed."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(count, size=min(size, count), replace=False))


def random_span(text: str, rng: np.random.Generator, words: tuple[int, int] = SPAN_WORDS) -> str:
    """A span of between ``words[0]`` and ``words[1]`` consecutive words of ``text``, at a random place."""
    tokens = text.split()
    length = int(rng.integers(words[0], words[1] + 1))
    if len(tokens) <= length:
        return " ".join(tokens)
    start = int(rng.integers(0, len(tokens) - length + 1))
    return " ".join(tokens[start : start + length])


def span_queries(titles: Sequence[str | None], texts: Sequence[str], seed: int) -> list[str]:
    """One span query per document (empty where a document has no words), drawn with ``seed``."""
    rng = np.random.default_rng([seed, 1])
    return [random_span(document_text(title, text), rng) for title, text in zip(titles, texts)]


def rare_term_span(
    text: str, rarity: Callable[[list[str]], np.ndarray], rng: np.random.Generator, words: tuple[int, int] = SPAN_WORDS
) -> str:
    """A span like :func:`random_span` placed to hold the text's rarest word (``rarity`` gives
    each word's document frequency; inf for words that count for nothing): the package name or
    acronym a query rides on, which a prefix shortlist is most likely to miss."""
    tokens = text.split()
    length = int(rng.integers(words[0], words[1] + 1))
    if len(tokens) <= length:
        return " ".join(tokens)
    frequencies = rarity(tokens)
    if not np.isfinite(frequencies).any():
        return random_span(text, rng, words)
    rarest = int(np.argmin(frequencies))
    start = int(rng.integers(max(0, rarest - length + 1), min(rarest, len(tokens) - length) + 1))
    return " ".join(tokens[start : start + length])
