"""What an evaluation reads: queries and judgements checked against an index, the index, query vectors.

A BEIR folder is indexed through the same path as ``funnel index`` (:func:`funnel.corpus.open_corpus`
with ``skip_invalid`` and :mod:`funnel.indexes.builder`), once, into ``INDEX_DIR/<dataset>-<model>``,
and reused after. Every problem is an :class:`~funnel.errors.InputError`; what is skipped on the way
is returned as warning lines for the caller to show.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from funnel.errors import InputError
from funnel.evaluation.datasets import known_judgements, load_beir
from funnel.evaluation.metrics import Qrels
from funnel.readers import load_qrels, load_queries

if TYPE_CHECKING:
    from funnel.encoders.choose import TextEncoder
    from funnel.indexes.index import Index
    from funnel.models import Encoder


@dataclass(frozen=True)
class EvaluationData:
    """Judged queries (in file order) and their judgements, and what was skipped on the way."""

    name: str
    path: str
    split: str
    queries: dict[str, str]
    qrels: Qrels
    warnings: list[str]


def dataset_data(dataset: str | Path, split: str) -> EvaluationData:
    """Queries and qrels of one split of a BEIR folder (judgements of unknown ids skipped, with warnings)."""
    loaded = load_beir(dataset, split)
    return EvaluationData(Path(dataset).resolve().name, str(dataset), split, loaded.queries, loaded.qrels, list(loaded.warnings))


def is_index(source: str | Path | Index) -> bool:
    """Whether ``source`` is an index (an Index, or a folder with a manifest) rather than a BEIR folder."""
    from funnel.indexes.index import Index
    from funnel.indexes.manifest import MANIFEST_FILE

    return isinstance(source, Index) or (Path(source) / MANIFEST_FILE).is_file()


def open_index(index: str | Path | Index) -> Index:
    from funnel.indexes.index import Index

    return index if isinstance(index, Index) else Index.load(index)


def index_data(index: Index, queries: str | Path | None, qrels: str | Path | None) -> EvaluationData:
    """Queries (BEIR JSONL) and qrels (BEIR TSV or TREC) for an existing index, checked against its ids."""
    if queries is None or qrels is None:
        raise InputError("an evaluation on an existing index needs --queries (JSONL) and --qrels (TSV)")
    all_queries = load_queries(queries)
    judged, warnings = known_judgements(load_qrels(qrels), all_queries, set(index.ids()), Path(qrels), "the index")
    kept = {query_id: text for query_id, text in all_queries.items() if query_id in judged}
    if not kept:
        raise InputError(f"{qrels}: no query of {queries} has a judgement of a document in {index.path}; check the ids")
    return EvaluationData(index.path.name, str(index.path), Path(qrels).stem, kept, judged, warnings)


def dataset_index(
    dataset: str | Path,
    encoder: Encoder,
    index_dir: Path,
    cache: str | Path | None,
    rebuild: bool,
    say: Callable[[str], None],
    layers: tuple[int, ...] = (),
    rotation: str = "auto",
) -> tuple[Index, list[str]]:
    """Build (or reuse) the index of a BEIR folder's corpus; returns it with notes on skipped rows.
    ``layers``: the index must hold those layers' vectors too (an index without them is rebuilt)."""
    from funnel.corpus import open_corpus
    from funnel.indexes.builder import IndexConfig, build_index, write_index
    from funnel.indexes.index import Index

    corpus = open_corpus(dataset, skip_invalid=True)
    target = index_dir / f"{Path(dataset).resolve().name}-{Path(encoder.name).name}"
    if target.exists() and not rebuild:
        index = Index.load(target)
        built_from = Path(index.manifest.source.get("path", "")).resolve()
        if index.manifest.model != encoder.name or built_from != corpus.path.resolve():
            raise InputError(
                f"{target} holds an index of {built_from} with {index.manifest.model}, not of {corpus.path} with "
                f"{encoder.name}: pass --rebuild or another --index-dir"
            )
        missing = [layer for layer in layers if layer not in index.layers and not index.is_full_depth(layer)]
        built_with = index.manifest.rotation.requested if index.manifest.rotation else "none"
        if missing:
            say(f"the index at {target} lacks layers {missing}: rebuilding it")
            rebuild = True
        elif built_with != rotation:
            say(f"the index at {target} was built with --rotation {built_with}, not {rotation}: rebuilding it")
            rebuild = True
        else:
            say(f"reusing the index at {target}")
    if not target.exists() or rebuild:
        if layers and cache is not None:
            raise InputError("--layers needs every document encoded layer by layer: drop --embeddings-cache")
        if cache is None:
            say(f"indexing {corpus.path} into {target}")
            build_index(corpus, encoder, target, IndexConfig(layers=layers, rotation=rotation), overwrite=True, show_progress=True)
        else:
            from funnel.evaluation import embeddings

            folder = embeddings.cache_folder(cache, dataset)
            say(f"indexing {corpus.path} into {target} with the embeddings cached in {folder}")
            cached = embeddings.load_part(folder, "corpus", encoder.dim)
            _verify_corpus_sample(corpus, cached, encoder)
            source = {"path": str(corpus.path), "format": corpus.format, "skipped": corpus.skipped, "embeddings": str(folder)}
            write_index(
                embeddings.corpus_batches(corpus, cached),
                target,
                model=encoder.name,
                dim=encoder.dim,
                config=IndexConfig(rotation=rotation),
                model_metadata=encoder.metadata,
                source=source,
                overwrite=True,
            )
        index = Index.load(target)
    return index, _skip_notes(index)


def _verify_corpus_sample(corpus, cached, encoder: Encoder) -> None:
    from funnel.corpus import document_text
    from funnel.evaluation import embeddings

    first = next(iter(corpus.batches()))
    texts = [document_text(t, x) for t, x in zip(first.column("title").to_pylist(), first.column("text").to_pylist())]
    embeddings.verify(cached, first.column("id").to_pylist(), texts, encoder)


def _skip_notes(index: Index) -> list[str]:
    skipped = index.manifest.source.get("skipped") or {}
    if not skipped:
        return []
    reasons = ", ".join(f"{count} {reason}" for reason, count in skipped.items())
    return [f"indexing skipped {sum(skipped.values())} corpus rows ({reasons})"]


def missing_judged_documents(qrels: Qrels, index_ids: Sequence[str]) -> list[str]:
    """A note when judged documents are not in the index: they still count as relevant (trec_eval)."""
    present = set(index_ids)
    missing = [(query_id, doc_id) for query_id, judged in qrels.items() for doc_id, level in judged.items() if doc_id not in present]
    if not missing:
        return []
    relevant = sum(1 for query_id, doc_id in missing if qrels[query_id][doc_id] >= 1)
    return [
        f"{len(missing)} judgements ({relevant} relevant) name documents not in the index, such as "
        f"{missing[0][1]!r}; they still count as relevant and never retrieved (trec_eval convention)"
    ]


def query_vectors(
    encoder: TextEncoder, ids: list[str], texts: list[str], cache: str | Path | None, dataset: str | Path | None, say: Callable[[str], None]
) -> np.ndarray:
    """Normalized query vectors (q, dim): encoded once, or read from the cache after a sample check."""
    if cache is None:
        say(f"encoding {len(texts)} queries")
        return encoder.encode(texts)
    from funnel.evaluation import embeddings

    cached = embeddings.load_part(embeddings.cache_folder(cache, dataset), "queries", encoder.dim)
    embeddings.verify(cached, ids, texts, encoder)
    return cached.rows(ids)


def index_summary(index: Index) -> dict[str, object]:
    """Index settings and sizes for a report: shortlists on disk, memory and disk bytes."""
    from funnel.evaluation.compute import shortlist_bytes

    disk = sum(f.stat().st_size for f in index.path.rglob("*") if f.is_file())
    vectors = index.count * index.dim * np.dtype(index.manifest.vector_dtype).itemsize
    rotation = index.manifest.rotation
    stored = [{"dim": spec.dim, "kind": spec.kind, "params": spec.params} for spec in index.manifest.shortlists]
    in_memory = {str(dim): shortlist_bytes(index, dim) for dim in index.shortlist_dims}
    return {
        "path": str(index.path),
        "count": index.count,
        "dim": index.dim,
        "vector_dtype": index.manifest.vector_dtype,
        "shortlists_on_disk": stored,
        "shortlist_memory_bytes": in_memory,
        "vectors_bytes": vectors,
        "disk_bytes": disk,
        "source": index.manifest.source,
        "rotation": rotation and {key: record.get("method") for key, record in rotation.decision.items()},
    }
