"""Calibration queries: the queries a plan is tuned on, from the user or made from the corpus.

Real queries (a file, one per line) are best: their distribution is the one the plan will serve.
Without them, queries are made from sampled documents: a document's title when it has one, else
the first sentence of its text (at most :data:`MAX_QUERY_WORDS` words), which reads like a short
query or summary. The source document stays in the index (it is usually the query's top hit, which
would make recall too easy), so the tuner leaves each source document out of its own query's
exact and funnel results, as if it were held out of the index. Without a model (indexes built from
raw vectors), sampled documents' own vectors are the queries, left out the same way.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from funnel.errors import InputError
from funnel.vectors import normalize

if TYPE_CHECKING:
    from funnel.indexes.index import Index
    from funnel.models import Encoder

# Real queries are short. On SciFact (tuning at 0.99, checked against its real test queries),
# calibration queries cut to 10 words needed as many candidates as the real queries; 24-word ones
# were easier and the tuned plan fell short of the target on the real queries (0.983).
MAX_QUERY_WORDS = 10
CORPUS_SOURCE = "corpus: sampled documents'"
LEFT_OUT = "each left out of its own query's results"
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n")


@dataclass(frozen=True)
class CalibrationQueries:
    """Query vectors (q, dim), normalized, and where they came from (``source``, for the report);
    for queries made from documents, ``documents`` (q,) holds each one's source position."""

    vectors: np.ndarray
    source: str
    texts: tuple[str, ...] = ()
    documents: np.ndarray | None = None

    @property
    def count(self) -> int:
        return int(self.vectors.shape[0])


def first_sentence(text: str, max_words: int = MAX_QUERY_WORDS) -> str:
    """The first sentence of ``text``, cut to ``max_words`` words."""
    for piece in _SENTENCE_END.split(text.strip()):
        words = piece.split()
        if words:
            return " ".join(words[:max_words])
    return ""


def read_query_file(path: str | Path) -> list[str]:
    """Non-empty lines of a text file, one query each."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"calibration queries file {path} does not exist")
    texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise InputError(f"no queries in {path}: write one query per line")
    return texts


def sample_positions(count: int, size: int, seed: int) -> np.ndarray:
    """``size`` distinct document positions out of ``count``, sorted; the same for the same seed."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(count, size=min(size, count), replace=False))


def corpus_queries(index: "Index", encoder: "Encoder | None", size: int, seed: int) -> CalibrationQueries:
    """Queries made from ``size`` sampled documents (title, else first sentence; see module doc)."""
    positions = sample_positions(index.count, size, seed)
    if encoder is None:
        return CalibrationQueries(index.vectors(positions), f"{CORPUS_SOURCE} own vectors (no model), {LEFT_OUT}", documents=positions)
    texts = []
    for doc in index.documents([int(p) for p in positions]):
        title = (doc.get("title") or "").strip()
        texts.append(" ".join(title.split()[:MAX_QUERY_WORDS]) if title else first_sentence(doc["text"]))
    kept = [number for number, text in enumerate(texts) if text]
    if not kept:
        raise InputError("the sampled documents have no text to make queries from: pass a queries file")
    return CalibrationQueries(encoder.encode([texts[n] for n in kept]), f"{CORPUS_SOURCE} titles or first sentences (≤ {MAX_QUERY_WORDS} words), {LEFT_OUT}",
                              tuple(texts[n] for n in kept), positions[kept])


def resolve_queries(
    index: "Index", encoder: "Encoder | None", queries: "CalibrationQueries | Sequence[str] | np.ndarray | str | Path | None",
    size: int, seed: int,
) -> CalibrationQueries:
    """Calibration queries from a file path, a list of texts, ready vectors (q, dim), the corpus
    (None), or already resolved ones (e.g. to tune several times without encoding again)."""
    if isinstance(queries, CalibrationQueries):
        return queries
    if queries is None:
        return corpus_queries(index, encoder, size, seed)
    if isinstance(queries, np.ndarray):
        if queries.ndim != 2 or queries.shape[1] != index.dim or len(queries) == 0:
            raise InputError(f"calibration vectors must have shape (queries, {index.dim}), not {queries.shape}")
        return CalibrationQueries(normalize(queries), f"given: {len(queries)} query vectors")
    source = "given: a list of queries"
    if isinstance(queries, (str, Path)):
        source = f"file: {queries}"
        queries = read_query_file(queries)
    texts = [q for q in queries if isinstance(q, str) and q.strip()]
    if not texts:
        raise InputError("no calibration queries given: pass some text, or None to make them from the corpus")
    if encoder is None:
        raise InputError("calibration queries given as text need a model to encode them")
    return CalibrationQueries(encoder.encode(texts), source, tuple(texts))
