"""Calibration queries: the queries a plan is tuned on, from the user or made from the corpus.

Real queries (a file, one per line) are best: their distribution is the one the plan will serve.
Without them, queries are made from sampled documents: a random span of
:data:`SPAN_WORDS` consecutive words of the document's title and text. Spans are short like real
queries and harder than a document's first sentence or title, which reads like a summary of it:
checked against real queries on SciFact and on Debian (with its training-pair summaries, not its
test queries), first-sentence queries were easier than real ones and tuned plans fell short of
the target, while spans were as hard or a little harder. The source document stays in the index
(it would be its query's easy top hit), so the tuner leaves each source document out of its own
query's exact and funnel results, as if it were held out of the index. Without a model (indexes
built from raw vectors), sampled documents' own vectors are the queries, left out the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from funnel.corpus import document_text
from funnel.errors import InputError
from funnel.spans import SPAN_WORDS, rare_term_span, sample_positions, span_queries
from funnel.vectors import normalize

if TYPE_CHECKING:
    from funnel.indexes.index import Index
    from funnel.models import Encoder

CORPUS_SOURCE = "corpus: sampled documents'"
LEFT_OUT = "each left out of its own query's results"


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


def read_query_file(path: str | Path) -> list[str]:
    """Non-empty lines of a text file, one query each."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"calibration queries file {path} does not exist")
    texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise InputError(f"no queries in {path}: write one query per line")
    return texts


def corpus_queries(index: Index, encoder: Encoder | None, size: int, seed: int) -> CalibrationQueries:
    """Queries made from ``size`` sampled live documents (random word spans; see module doc).
    Sampled by rank among the live documents, so an index with deletions and its compacted copy
    get the same queries."""
    live = index.live_positions()
    positions = live[sample_positions(len(live), size, seed)]
    if encoder is None:
        # Queries are the model's vectors, like encoded ones: stored vectors go back from the
        # index's rotated basis.
        stored = index.vectors(positions)
        vectors = stored if index.rotation() is None else normalize(index.to_model_basis(stored))
        return CalibrationQueries(vectors, f"{CORPUS_SOURCE} own vectors (no model), {LEFT_OUT}", documents=positions)
    documents = index.documents([int(p) for p in positions])
    texts = span_queries([doc["title"] for doc in documents], [doc["text"] for doc in documents], seed)
    rare = ""
    if index.lexical is not None:
        texts = _with_rare_term_spans(texts, documents, index.lexical.word_rarity, seed)
        rare = f" (every {RARE_TERM_EVERY}th holding its document's rarest term)"
    kept = [number for number, text in enumerate(texts) if text]
    if not kept:
        raise InputError("the sampled documents have no text to make queries from: pass a queries file")
    return CalibrationQueries(
        encoder.encode([texts[n] for n in kept]),
        f"{CORPUS_SOURCE} random {SPAN_WORDS[0]}-{SPAN_WORDS[1]} word spans{rare}, {LEFT_OUT}",
        tuple(texts[n] for n in kept),
        positions[kept],
    )


RARE_TERM_EVERY = 4
"""Where the index keeps BM25 (and so can add its candidates), every 4th corpus query is a span
holding its document's rarest term: the queries lexical candidates exist for, which the tuner
must see to judge them."""


def _with_rare_term_spans(texts: list[str], documents: list[dict], rarity: Callable[[list[str]], np.ndarray], seed: int) -> list[str]:
    rng = np.random.default_rng([seed, 2])
    out = list(texts)
    for number in range(0, len(texts), RARE_TERM_EVERY):
        if texts[number]:
            out[number] = rare_term_span(document_text(documents[number]["title"], documents[number]["text"]), rarity, rng)
    return out


def resolve_queries(
    index: Index,
    encoder: Encoder | None,
    queries: CalibrationQueries | Sequence[str] | np.ndarray | str | Path | None,
    size: int,
    seed: int,
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
