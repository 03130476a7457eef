"""Nested prefixes from a model that was not trained to nest: the model's order, the index's PCA
rotation (the product's own code: ``funnel.indexes.rotation``), and learned maps beyond it.

For one BEIR dataset with cached embeddings (``benchmarks/embed_cache.py``), every basis is scored
on the dataset's real test queries, which no fit ever sees (the fits use corpus vectors only):
NDCG@10 from the first 32/64/128 dims alone (re-normalized prefix cosine over the whole corpus)
and at full dims, and the share of queries whose 64:200 / 64:400 funnel (prefix shortlist, then
rescoring with the model's own full vectors) returns exactly the exact top-10.

Bases:
- ``model``: the model's own order.
- ``pca``: the rotation ``funnel index`` stores (eigenvectors of DᵀD over the whole corpus).
- ``pca-sample10``: the same fitted on a random 10% of the corpus.
- ``pca-other-corpus``: fitted on another dataset's corpus (``--other``), and ``pca-queries``:
  fitted on the test queries themselves; ``pca-centered``: sklearn-style PCA that subtracts the
  corpus mean from documents and queries. These test why an earlier off-the-record attempt stayed
  at model-order quality (see the README).
- ``learned-rotation``: an orthogonal matrix (torch's orthogonal parametrization) started at
  ``pca`` and trained on corpus vectors standing in as queries, so that each prefix's softmax over
  the query's full-dim neighbours matches the full-dim one; still lossless at full dims.
- ``adaptor``: a Matryoshka-Adaptor-style map of the PCA-rotated vectors, ``x + MLP(x)`` (no
  orthogonality), trained with pairwise and top-k similarity losses; only the shortlist uses it,
  the last stage rescores with the model's vectors, so full-dim quality is exactly the model's.

    python -m benchmarks.nesting ../shared/data/cranfield --cache CACHE/all-MiniLM-L6-v2 \\
        --other ../shared/data/scifact -o benchmarks/results/nesting/cranfield.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks import common

if TYPE_CHECKING:
    import torch

BENCHMARK = "nesting"
Basis = Callable[[np.ndarray], np.ndarray]
"""The vectors a basis takes prefixes of, from the model's (documents and queries alike)."""
Qrels = Mapping[str, Mapping[str, int]]
DIMS = (32, 64, 128)
POOL = 8192  # corpus vectors a learned map trains on (all of them for smaller corpora)
FUNNELS = ((64, 200), (64, 400))
K = 10


def load_cached(dataset: Path, cache: Path) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """Corpus ids and vectors, query ids and vectors of ``dataset`` in the embed_cache folder
    ``cache``, the rows as stored. Not :func:`benchmarks.common.cached_embeddings`: it normalizes
    the rows again, which moves their last bits, and a PCA fitted on fewer vectors than dims
    (``pca-sample10``, ``pca-queries`` on a small set) turns on those bits."""
    folder = cache / dataset.resolve().name
    corpus_ids = [str(i) for i in json.loads((folder / "corpus_ids.json").read_text())]
    query_ids = [str(i) for i in json.loads((folder / "queries_ids.json").read_text())]
    return corpus_ids, np.load(folder / "corpus.npy"), query_ids, np.load(folder / "queries.npy")


def corpus_rows(dataset: Path) -> list[dict[str, Any]]:
    """Every row of the dataset's corpus.jsonl, read by :func:`funnel.readers.read_jsonl`."""
    from funnel.readers import CORPUS_FILE, read_jsonl

    return [row for _, row in read_jsonl(dataset / CORPUS_FILE)]


def empty_documents(dataset: Path) -> set[str]:
    """Ids of documents without text: ``funnel index`` skips them, so the figures here do too."""
    return {str(row["_id"]) for row in corpus_rows(dataset) if not (row.get("text") or "").strip()}


def prefix_cosines(queries: np.ndarray, documents: np.ndarray, dim: int) -> np.ndarray:
    from funnel.vectors import truncate

    return truncate(queries, dim) @ truncate(documents, dim).T


def ndcg(scores: np.ndarray, query_ids: list[str], corpus_ids: list[str], qrels: Qrels) -> float:
    """nDCG@10 of the top 100 of every query's scores over the corpus (:func:`benchmarks.common.ndcg`)."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :100]
    return common.ndcg(query_ids, top, np.take_along_axis(scores, top, axis=1), corpus_ids, qrels)


def funnel_agreement(prefix: np.ndarray, full: np.ndarray, n: int) -> float:
    """Share of queries whose ``n``-candidate prefix shortlist, rescored at full dims, returns
    exactly the exact top-10 (as a set; order follows from the full scores)."""
    exact = np.argsort(-full, axis=1, kind="stable")[:, :K]
    shortlist = np.argpartition(-prefix, n - 1, axis=1)[:, :n]
    rescored = np.take_along_axis(full, shortlist, axis=1)
    found = np.take_along_axis(shortlist, np.argsort(-rescored, axis=1, kind="stable")[:, :K], axis=1)
    return common.identical_share(found, exact, K)


def span_vectors(dataset: Path, corpus_ids: list[str], count: int, seed: int = 0) -> np.ndarray:
    """Encoded random 5–10-word spans of ``count`` sampled documents (as the tuner makes queries)."""
    from funnel.corpus import document_text
    from funnel.models import Encoder
    from funnel.spans import random_span, sample_positions

    wanted = set(corpus_ids)
    texts = {}
    for row in corpus_rows(dataset):
        if str(row["_id"]) in wanted:
            texts[str(row["_id"])] = document_text(row.get("title") or None, row.get("text") or "")
    rng = np.random.default_rng([seed, 1])
    chosen = sample_positions(len(corpus_ids), count, seed)
    return Encoder.load().encode([random_span(texts[corpus_ids[p]], rng) for p in chosen])


def pca(documents: np.ndarray) -> np.ndarray:
    from funnel.indexes.rotation import pca_rotation, second_moment

    return pca_rotation(second_moment([documents]))


def neighbours(documents: np.ndarray, count: int, chunk: int = 2048) -> np.ndarray:
    """Each document's ``count`` nearest other documents at full dims (documents as pseudo-queries)."""
    out = np.empty((len(documents), count), dtype=np.int64)
    for start in range(0, len(documents), chunk):
        scores = documents[start : start + chunk] @ documents.T
        scores[np.arange(len(scores)), np.arange(start, start + len(scores))] = -np.inf
        part = np.argpartition(-scores, count - 1, axis=1)[:, :count]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        out[start : start + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def learned_rotation(documents: np.ndarray, start: np.ndarray, seconds: float, seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Orthogonal R started at ``start`` (PCA), trained so that every prefix's softmax over a
    pseudo-query's candidates (its 64 full-dim neighbours among up to :data:`POOL` corpus vectors
    and 64 random ones) matches the
    full-dim softmax (KL, temperature 0.05)."""
    import torch
    from torch.nn.utils.parametrizations import orthogonal

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dim = documents.shape[1]
    layer = orthogonal(torch.nn.Linear(dim, dim, bias=False))
    layer.weight = torch.from_numpy(start.T.copy())  # Linear computes x Wᵀ: W = Rᵀ
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-3)
    pool = documents if len(documents) <= POOL else documents[rng.choice(len(documents), POOL, replace=False)]
    docs = torch.from_numpy(np.ascontiguousarray(pool, dtype=np.float32))
    near = neighbours(pool, 64)
    steps, losses, began = 0, [], time.perf_counter()
    while time.perf_counter() - began < seconds:
        rows = rng.choice(len(pool), 256, replace=False)
        candidates = np.concatenate([near[rows], rng.integers(0, len(pool), (len(rows), 64))], axis=1)
        # The matrix is computed once a step and the whole pool rotated at once (cheaper than
        # rotating each query's candidates separately), then gathered.
        rotated = docs @ layer.weight.T
        loss = _distillation_loss(rotated[rows], rotated[candidates], docs[rows], docs[candidates])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        steps += 1
    with torch.no_grad():
        rotation = layer.weight.detach().numpy().T.astype(np.float32)
    return rotation, _training_info(steps, began, losses)


def _training_info(steps: int, began: float, losses: list[float]) -> dict[str, Any]:
    seconds = round(time.perf_counter() - began, 1)
    return {"steps": steps, "seconds": seconds, "loss_first": losses[0], "loss_last": float(np.mean(losses[-20:]))}


def _distillation_loss(
    query: torch.Tensor, candidates: torch.Tensor, query_full: torch.Tensor, candidates_full: torch.Tensor, temperature: float = 0.05
) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    target = torch.softmax(torch.einsum("bd,bnd->bn", query_full, candidates_full) / temperature, dim=1)
    loss = torch.zeros(())
    for dim in DIMS:
        q = F.normalize(query[:, :dim], dim=-1)
        c = F.normalize(candidates[:, :, :dim], dim=-1)
        logits = torch.einsum("bd,bnd->bn", q, c) / temperature
        loss = loss + F.kl_div(torch.log_softmax(logits, dim=1), target, reduction="batchmean")
    return loss / len(DIMS)


class Adaptor:
    """``f(x) = x + W₂ relu(W₁ x)`` on PCA-rotated vectors (W₂ starts at zero: f starts as PCA)."""

    def __init__(self, dim: int, hidden: int = 512) -> None:
        import torch

        self.up = torch.nn.Linear(dim, hidden)
        self.down = torch.nn.Linear(hidden, dim)
        torch.nn.init.zeros_(self.down.weight)
        torch.nn.init.zeros_(self.down.bias)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [*self.up.parameters(), *self.down.parameters()]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        return x + self.down(torch.relu(self.up(x)))

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self(torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))).numpy()


def train_adaptor(rotated: np.ndarray, seconds: float, seed: int = 0) -> tuple[Adaptor, dict[str, Any]]:
    """Unsupervised Matryoshka-Adaptor recipe: for each prefix, the pairwise cosine matrix of a
    batch matches the full-dim one (pairwise loss), each document's similarities to its 10
    nearest full-dim neighbours match (top-k loss), and the map stays close to the identity."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    adaptor = Adaptor(rotated.shape[1])
    optimizer = torch.optim.Adam(adaptor.parameters(), lr=1e-3)
    docs = torch.from_numpy(np.ascontiguousarray(rotated, dtype=np.float32))
    near = neighbours(rotated, 10)
    steps, losses, began = 0, [], time.perf_counter()
    while time.perf_counter() - began < seconds:
        rows = rng.choice(len(rotated), 256, replace=False)
        x, neighbour = docs[rows], docs[near[rows]]
        full_pairs, full_near = x @ x.T, torch.einsum("bd,bnd->bn", x, neighbour)
        fx, fn = adaptor(x), adaptor(neighbour)
        loss = torch.zeros(())
        for dim in DIMS:
            q, c = F.normalize(fx[:, :dim], dim=-1), F.normalize(fn[:, :, :dim], dim=-1)
            loss = loss + (q @ q.T - full_pairs).abs().mean() + (torch.einsum("bd,bnd->bn", q, c) - full_near).abs().mean()
        loss = loss + 0.1 * (fx - x).pow(2).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        steps += 1
    return adaptor, _training_info(steps, began, losses)


@dataclass(frozen=True)
class Inputs:
    """One dataset's cached vectors (documents without text left out, as ``funnel index`` does),
    its test queries' vectors and qrels, and the model's full-dim scores."""

    corpus_ids: list[str]
    documents: np.ndarray
    query_ids: list[str]
    queries: np.ndarray
    qrels: Qrels
    full: np.ndarray  # (queries, documents): the model's own full-dim scores

    def ndcg(self, scores: np.ndarray) -> float:
        return ndcg(scores, self.query_ids, self.corpus_ids, self.qrels)


def load_inputs(dataset: Path, cache: Path) -> Inputs:
    from funnel.evaluation.inputs import dataset_data

    data = dataset_data(dataset, "test")
    corpus_ids, documents, cached_query_ids, cached_queries = load_cached(dataset, cache)
    empty = empty_documents(dataset)
    keep = np.array([doc_id not in empty for doc_id in corpus_ids])
    corpus_ids, documents = [i for i, k in zip(corpus_ids, keep) if k], documents[keep]
    lookup = {query_id: row for row, query_id in enumerate(cached_query_ids)}
    query_ids = [query_id for query_id in data.queries if query_id in lookup]
    queries = cached_queries[[lookup[query_id] for query_id in query_ids]]
    return Inputs(corpus_ids, documents, query_ids, queries, data.qrels, queries @ documents.T)


def score_basis(name: str, inputs: Inputs, shortlist_map: Basis) -> dict[str, Any]:
    """Figures for one basis: ``shortlist_map`` gives the vectors the prefixes are taken from
    (documents and queries alike); full-dim scores are ``inputs.full`` (the model's own)."""
    q, d = shortlist_map(inputs.queries), shortlist_map(inputs.documents)
    row: dict[str, Any] = {"basis": name, "full": round(inputs.ndcg(q @ d.T), 4)}
    for dim in DIMS:
        prefix = prefix_cosines(q, d, dim)
        row[str(dim)] = round(inputs.ndcg(prefix), 4)
        if dim == 64:
            for _, n in FUNNELS:
                row[f"64:{n} identical top-10"] = round(funnel_agreement(prefix, inputs.full, n), 4)
    return row


def rotation_basis(matrix: np.ndarray) -> Basis:
    return lambda vectors: vectors @ matrix


def bases(args: argparse.Namespace, inputs: Inputs, notes: dict[str, Any]) -> list[tuple[str, Callable[[], Basis]]]:
    """Every basis, by name, as a maker: fitting (or training) happens when the maker runs, and
    adds what it learned to ``notes``."""
    documents = inputs.documents
    rotation = pca(documents)
    sample = documents[np.random.default_rng(0).choice(len(documents), max(1, len(documents) // 10), replace=False)]

    other = None
    if args.other is not None:
        other = load_cached(args.other, args.cache)[1]
        notes["pca-other-corpus"] = f"fitted on {args.other.resolve().name}'s corpus"
    # Fitted here, outside the basis's timing, as the committed figures were made.
    mean = documents.mean(axis=0)
    centered = pca(documents - mean)

    def spans() -> Basis:
        """PCA of DᵀD plus the second moment of encoded 5–10-word spans of sampled documents (the
        tuner's calibration queries, query-like vectors made from the corpus alone), each scaled to
        a unit trace, with weight ``--span-weight`` on the spans."""
        from funnel.indexes.rotation import pca_rotation, second_moment

        made = span_vectors(args.dataset, inputs.corpus_ids, args.spans)
        moment_docs, moment_spans = second_moment([documents]), second_moment([made])
        mixed = (1 - args.span_weight) * moment_docs / np.trace(moment_docs) + args.span_weight * moment_spans / np.trace(moment_spans)
        notes["pca-spans"] = {"spans": len(made), "span_weight": args.span_weight}
        return rotation_basis(pca_rotation(mixed))

    def learned() -> Basis:
        matrix, info = learned_rotation(documents, rotation, args.train_seconds)
        notes["learned-rotation"] = {**info, "orthogonality_error": float(np.abs(matrix.T @ matrix - np.eye(len(matrix))).max())}
        return rotation_basis(matrix)

    def adaptor() -> Basis:
        model, info = train_adaptor(documents @ rotation, args.train_seconds)
        notes["adaptor"] = info
        return lambda vectors: model.apply(vectors @ rotation)

    return [
        ("model", lambda: lambda vectors: vectors),
        ("pca", lambda: rotation_basis(rotation)),
        ("pca-sample10", lambda: rotation_basis(pca(sample))),
        *([("pca-other-corpus", lambda: rotation_basis(pca(other)))] if other is not None else []),
        ("pca-queries", lambda: rotation_basis(pca(inputs.queries))),
        ("pca-spans", spans),
        ("pca-centered", lambda: lambda vectors: (vectors - mean) @ centered),
        ("learned-rotation", learned),
        ("adaptor", adaptor),
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=common.dataset_path, help="a BEIR folder, or the name of a shared dataset")
    parser.add_argument("--cache", type=Path, required=True, help="embed_cache folder of the model (holds <dataset>/corpus.npy)")
    parser.add_argument(
        "--other", type=common.dataset_path, default=None, help="another dataset whose corpus PCA is applied here (cached too)"
    )
    parser.add_argument("--train-seconds", type=float, default=90.0, help="training time of each learned map")
    parser.add_argument("--spans", type=int, default=1000, help="corpus spans encoded for pca-spans")
    parser.add_argument("--span-weight", type=float, default=0.5, help="weight of the spans' second moment in pca-spans")
    parser.add_argument("--only", default=None, help="comma-separated bases to run (default: all)")
    parser.add_argument("-o", "--output", type=Path, required=True)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    inputs = load_inputs(args.dataset, args.cache)
    wanted = set(args.only.split(",")) if args.only else None
    rows: list[dict[str, Any]] = []
    notes: dict[str, Any] = {}
    for name, make in bases(args, inputs, notes):
        if wanted is not None and name not in wanted:
            continue
        began = time.perf_counter()
        rows.append(score_basis(name, inputs, make()))
        rows[-1]["fit_seconds"] = round(time.perf_counter() - began, 1)
        print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        if row["basis"] == "adaptor":  # the last stage rescores with the model's own vectors
            row["full"] = round(inputs.ndcg(inputs.full), 4)
            row["full_note"] = "shortlist-only map: the funnel's full-dim stage rescores with the model's own vectors"
    results = {
        "dataset": args.dataset.resolve().name,
        "documents": len(inputs.documents),
        "queries": len(inputs.query_ids),
        "rows": rows,
        "notes": notes,
    }
    common.write_result(
        args.output, common.Result.make(BENCHMARK, common.parameters(args), results, common.machine(torch_threads=_threads()))
    )


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
