"""Real evaluation data for the metric and dataset tests: Cranfield and SciFact, plus a real run."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from funnel.evaluation.datasets import BeirDataset, load_beir
from funnel.evaluation.metrics import Run


@pytest.fixture(scope="session")
def cranfield(data_dir: Path) -> BeirDataset:
    return load_beir(data_dir / "cranfield")


@pytest.fixture(scope="session")
def cranfield_run(cranfield: BeirDataset) -> Run:
    """A real ranking: TF-IDF cosine over every document of the Cranfield slice, top 100 per query."""
    return tfidf_run(cranfield.passages(), cranfield.corpus_ids, cranfield.queries, depth=100)


@pytest.fixture(scope="session")
def scifact(data_dir: Path) -> BeirDataset:
    return load_beir(data_dir / "scifact")


@pytest.fixture(scope="session")
def scifact_run(scifact: BeirDataset) -> Run:
    """TF-IDF over the judged SciFact documents plus the first 300 others, top 100 per query."""
    judged = {doc for judgements in scifact.qrels.values() for doc in judgements}
    rows = [i for i, doc in enumerate(scifact.corpus_ids) if doc in judged or i < 300]
    passages = scifact.passages()
    return tfidf_run([passages[i] for i in rows], [scifact.corpus_ids[i] for i in rows], scifact.queries, depth=100)


def tfidf_run(passages: list[str], doc_ids: list[str], queries: dict[str, str], depth: int) -> Run:
    """Rank ``passages`` for each query by TF-IDF cosine (log tf, idf = log(N/df)); keep ``depth``."""
    tokenized = [Counter(_tokens(text)) for text in passages]
    document_frequency = Counter(term for counts in tokenized for term in counts)
    idf = {term: math.log(len(passages) / df) for term, df in document_frequency.items()}
    # Inverted index of normalized document weights, so a query touches only its terms' postings.
    postings: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    for row, counts in enumerate(tokenized):
        weights = {term: (1 + math.log(tf)) * idf[term] for term, tf in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        for term, weight in weights.items():
            postings[term][0].append(row)
            postings[term][1].append(weight / norm)
    arrays = {term: (np.array(rows), np.array(weights)) for term, (rows, weights) in postings.items()}
    run: Run = {}
    for query_id, text in queries.items():
        scores = np.zeros(len(passages))
        for term, tf in Counter(_tokens(text)).items():
            if term in arrays:
                rows, weights = arrays[term]
                scores[rows] += (1 + math.log(tf)) * idf[term] * weights
        top = np.argsort(-scores, kind="stable")[:depth]
        run[query_id] = {doc_ids[row]: float(scores[row]) for row in top}
    return run


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())
