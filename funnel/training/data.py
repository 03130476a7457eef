"""Load training examples into a ``datasets.Dataset`` with the columns the losses expect.

Three kinds, recognised by their columns:

- pairs / triplets: (query | anchor | question, positive | document | pos[, negative | negatives])
  -> columns ``anchor``, ``positive`` and ``negative_1..n``;
- scored pairs: (sentence1, sentence2, score | label) -> ``sentence1``, ``sentence2``, ``score``;
- a BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/train.tsv): every judged pair with a
  positive score becomes (query text, title + " " + text);
- a funnel index folder: unlabeled pairs from its own documents, (a span of a document, the
  document), :data:`SPANS_PER_DOCUMENT` spans each (:mod:`funnel.spans`) — text for a loss that
  needs no labels (``distill``), so a model can be trained on the corpus it will search.

Files are JSONL (``.jsonl``/``.json``) or parquet; other columns (ids, genre…) are dropped. JSONL
and BEIR files are parsed by :mod:`funnel.readers`, with its rules for qrels headers and for
joining a title and a text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from funnel.errors import InputError
from funnel.readers import CORPUS_FILE, QRELS_FOLDER, QUERIES_FILE, document_text, load_qrels, load_queries, read_corpus, read_jsonl

if TYPE_CHECKING:
    from datasets import Dataset

ANCHOR_NAMES = ("anchor", "query", "question")
POSITIVE_NAMES = ("positive", "document", "pos", "answer")
NEGATIVE_NAMES = ("negatives", "negative", "neg")
SCORED_NAMES = (("sentence1", "sentence2"), ("score", "label"))
PAIR_KIND, SCORED_KIND = "pairs", "scored"
SPANS_PER_DOCUMENT = 3


def load_examples(sources: Sequence[Path | str], *, max_rows: int | None = None, seed: int = 12) -> Dataset:
    """Read every source, check they are one kind, concatenate, shuffle with ``seed``, keep ``max_rows``.

    Returns a Dataset with columns (anchor, positive[, negative_1..n]) or (sentence1, sentence2,
    score). Raises InputError naming the file and the columns it has when a source fits no kind.
    """
    from datasets import Dataset

    kinds: set[str] = set()
    rows: list[dict[str, Any]] = []
    for source in sources:
        kind, source_rows = _read_source(Path(source))
        kinds.add(kind)
        rows.extend(source_rows)
    if len(kinds) > 1:
        raise InputError("cannot mix scored pairs with query/positive pairs in one run: train them separately")
    if not rows:
        raise InputError(f"no training examples in {', '.join(str(s) for s in sources)}")
    if kinds == {PAIR_KIND}:
        rows = _pad_negatives(rows)
    dataset = Dataset.from_list(rows).shuffle(seed=seed)
    if max_rows is not None and max_rows < len(dataset):
        dataset = dataset.select(range(max_rows))
    return dataset


def kind_of(dataset: Dataset) -> str:
    """ "pairs" or "scored", from a dataset made by :func:`load_examples`."""
    return SCORED_KIND if "score" in dataset.column_names else PAIR_KIND


def _read_source(path: Path) -> tuple[str, list[dict[str, Any]]]:
    if path.is_dir() and (path / "manifest.json").exists():
        return PAIR_KIND, _read_index(path)
    if path.is_dir():
        return PAIR_KIND, _read_beir(path)
    if not path.exists():
        raise InputError(f"training data {path} does not exist")
    records = _read_records(path)
    if not records:
        raise InputError(f"{path} holds no rows")
    columns = list(records[0])
    lower = {c.lower(): c for c in columns}
    anchor = _first(lower, ANCHOR_NAMES)
    positive = _first(lower, POSITIVE_NAMES)
    if anchor and positive:
        negatives = _first(lower, NEGATIVE_NAMES)
        return PAIR_KIND, [_pair_row(path, i, r, anchor, positive, negatives) for i, r in enumerate(records)]
    (left, right), scores = SCORED_NAMES
    score = _first(lower, scores)
    if left in lower and right in lower and score:
        return SCORED_KIND, [_scored_row(path, i, r, lower[left], lower[right], score) for i, r in enumerate(records)]
    raise InputError(
        f"{path} has columns {columns}: expected query/anchor + positive (+ negative/negatives) "
        "for pairs or triplets, or sentence1 + sentence2 + score for scored pairs"
    )


def _read_index(path: Path) -> list[dict[str, Any]]:
    """(span, document) pairs from a funnel index's live documents."""
    from funnel.indexes.index import Index
    from funnel.spans import span_queries

    index = Index.load(path, integrity="sampled")
    documents = index.documents([int(p) for p in index.live_positions()])
    titles, texts = [doc["title"] for doc in documents], [doc["text"] for doc in documents]
    passages = [document_text(title, text) for title, text in zip(titles, texts)]
    rows = []
    for seed in range(SPANS_PER_DOCUMENT):
        rows += [{"anchor": span, "positive": passage} for span, passage in zip(span_queries(titles, texts, seed), passages) if span]
    return rows


def _read_records(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix in (".jsonl", ".json"):
        return [record for _, record in read_jsonl(path)]
    raise InputError(f"{path}: training data must be .jsonl, .json or .parquet (or a BEIR folder)")


def _first(lower: dict[str, str], names: Iterable[str]) -> str | None:
    return next((lower[n] for n in names if n in lower), None)


def _text(path: Path, index: int, record: dict[str, Any], column: str) -> str:
    value = record.get(column)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{path} row {index + 1}: column {column!r} is empty or not text")
    return value


def _pair_row(path: Path, index: int, record: dict, anchor: str, positive: str, negatives: str | None) -> dict:
    row: dict[str, Any] = {"anchor": _text(path, index, record, anchor), "positive": _text(path, index, record, positive)}
    if negatives is not None:
        value = record.get(negatives)
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise InputError(f"{path} row {index + 1}: column {negatives!r} must be text or a list of texts")
        row["negatives"] = values
    return row


def _scored_row(path: Path, index: int, record: dict, left: str, right: str, score: str) -> dict:
    value = record.get(score)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InputError(f"{path} row {index + 1}: column {score!r} must be a number, got {value!r}")
    return {"sentence1": _text(path, index, record, left), "sentence2": _text(path, index, record, right), "score": float(value)}


def _pad_negatives(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spread ``negatives`` lists over negative_1..n columns; every row must have the same count."""
    counts = {len(r.get("negatives", [])) for r in rows}
    if len(counts) > 1:
        raise InputError(f"rows carry different numbers of negatives ({sorted(counts)}): give every row the same number")
    out = []
    for row in rows:
        negatives = row.pop("negatives", [])
        row.update({f"negative_{i + 1}": text for i, text in enumerate(negatives)})
        out.append(row)
    return out


def _read_beir(folder: Path) -> list[dict[str, Any]]:
    """(query, title + " " + text) for every judgement of qrels/train.tsv with a positive level;
    a judgement of an unknown query or document is an error (training takes no silent gaps)."""
    qrels_path = folder / QRELS_FOLDER / "train.tsv"
    missing = [p.name for p in (folder / CORPUS_FILE, folder / QUERIES_FILE, qrels_path) if not p.exists()]
    if missing:
        raise InputError(f"{folder} is not a BEIR folder with training judgements: missing {', '.join(missing)}")
    ids, titles, texts, _ = read_corpus(folder / CORPUS_FILE)
    docs = {doc_id: document_text(title, text) for doc_id, title, text in zip(ids, titles, texts)}
    queries = load_queries(folder / QUERIES_FILE)
    rows = []
    for query_id, judged in load_qrels(qrels_path).items():
        for doc_id, level in judged.items():
            if level <= 0:
                continue
            if query_id not in queries or doc_id not in docs:
                raise InputError(f"{qrels_path}: query {query_id!r} or document {doc_id!r} is unknown")
            rows.append({"anchor": queries[query_id], "positive": docs[doc_id]})
    return rows
