"""Compute accounting: what one query costs to encode, to shortlist and to rescore, in numbers.

Encoding (a BERT-like encoder with ``L`` layers, hidden size ``h``, feed-forward size ``f``, a
query of ``n`` tokens counted with the model's own tokenizer, special tokens included)::

    FLOPs = L · (2·n·(4h² + 2h·f) + 4·n²·h)

per layer: the Q, K, V and output projections (4h² multiply-adds a token), the feed-forward
block (2h·f a token) and attention's two n×n×h products (QKᵀ and AV); one multiply-add is 2
FLOPs. Embeddings, layer norms, softmax and pooling are left out (under 1% at these sizes).

Search (per query; one multiply-add = 2 FLOPs):

- **flat shortlist** at ``d`` dims over ``N`` vectors: N·d multiply-adds, N·d·4 bytes read
  (FAISS keeps float32);
- **hnsw / ivf shortlist**: the distance computations FAISS counts (``hnsw_stats.ndis``,
  ``indexIVF_stats.ndis``; IVF adds its ``nlist`` centroids) × d, and as many float32 rows read;
- **binary shortlist**: N Hamming distances over d bits: N·d/8 bytes and N·d/64 XOR+popcount
  pairs on 64-bit words (2 operations each);
- **quantized shortlists** (sq8, hnsw-sq8, pq-fastscan, ivf-pq-fastscan, opq-fastscan): as their float
  counterparts for the vectors visited, with each code's own size read (d bytes for 8-bit codes,
  d/4 for 4-bit PQ over 2-dim parts) and PQ fast-scan's SIMD lookups counted as a quarter of an
  operation per part;
- **rescoring** ``n`` candidates at ``D`` dims: n·D multiply-adds; each candidate's full stored
  row is read (n · full_dim · bytes per stored value), since truncation happens after the read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from funnel.indexes.index import Index
    from funnel.models import Encoder
    from funnel.search.plan import Stage
    from funnel.search.run import StageTrace


@dataclass(frozen=True)
class EncoderShape:
    """The sizes the encoding formula needs, read from a transformer's config."""

    layers: int
    hidden: int
    ffn: int
    max_tokens: int

    @classmethod
    def of(cls, encoder: Encoder) -> EncoderShape | None:
        """The shape of a BERT-like encoder; None when the model is not one (e.g. static embeddings)."""
        try:
            # The stubs type a submodule's attributes as Tensor | Module; this is the Hugging Face model.
            auto_model: Any = encoder.model[0].auto_model
            config = auto_model.config
            max_tokens = encoder.model.max_seq_length
            if max_tokens is None:
                return None
            return cls(
                layers=int(config.num_hidden_layers),
                hidden=int(config.hidden_size),
                ffn=int(config.intermediate_size),
                max_tokens=int(max_tokens),
            )
        except (AttributeError, IndexError, KeyError, TypeError):
            return None

    def flops(self, tokens: int, layers: int | None = None) -> int:
        """FLOPs to encode one text of ``tokens`` tokens through ``layers`` (default: all) layers."""
        n, h = int(tokens), self.hidden
        per_layer = 2 * n * (4 * h * h + 2 * h * self.ffn) + 4 * n * n * h
        return (self.layers if layers is None else layers) * per_layer


def count_tokens(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    """Tokens each text becomes with the model's tokenizer (special tokens in, truncated as encoding does)."""
    tokenizer = encoder.model.tokenizer
    max_length = int(getattr(encoder.model, "max_seq_length", 0) or 512)
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return np.array([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)


@dataclass(frozen=True)
class StageCost:
    """What one stage costs for one query (means over the query set)."""

    stage: str  # the stage as written, e.g. "64:200"
    role: str  # "shortlist" or "rescore"
    kind: str  # the shortlist kind (flat, hnsw, sq8, …), "full vectors" for rescoring
    dim: int
    vectors: float  # vectors scanned or visited (shortlist), candidates rescored (rescore)
    multiply_adds: float
    flops: float
    bytes_read: float


def shortlist_cost(stage: Stage, spec: Any, count: int, visited: float | None = None, nlist: int = 0) -> StageCost:
    """Cost of a first stage: ``spec`` the ShortlistSpec, ``count`` the index size.

    ``visited`` (distance computations per query) is needed for graph and IVF kinds; the others
    scan all ``count`` vectors. FLOPs and bytes per vector follow the kind's codes
    (:func:`~funnel.indexes.shortlist.score_flops`, :func:`~funnel.indexes.shortlist.code_bytes`).
    """
    from funnel.indexes.shortlist import KIND_INFO, code_bytes, score_flops

    info = KIND_INFO[spec.kind]
    if info.graph or info.inverted:
        if visited is None:
            raise ValueError(f"a {spec.kind} shortlist cost needs the vectors visited")
        vectors = float(visited) + nlist
    else:
        vectors = float(count)
    flops = vectors * score_flops(spec)
    multiply_adds = 0.0 if KIND_INFO[spec.kind].binary else flops / 2
    return StageCost(str(stage), "shortlist", spec.kind, spec.dim, vectors, multiply_adds, flops, vectors * code_bytes(spec))


def rescore_cost(stage: Stage, candidates: float, dim: int, full_dim: int, stored_bytes: int) -> StageCost:
    """Cost of rescoring ``candidates`` at ``dim`` dims from full rows of ``stored_bytes`` per value."""
    return StageCost(
        str(stage),
        "rescore",
        "full vectors",
        dim,
        float(candidates),
        candidates * dim,
        2.0 * candidates * dim,
        candidates * full_dim * stored_bytes,
    )


def funnel_costs(index: Index, trace: Sequence[StageTrace], visited: float | None = None) -> list[StageCost]:
    """Per-stage costs of one funnel run (its trace), per query. ``visited``: see shortlist_cost."""
    first = trace[0]
    spec, built = index.segments[0].shortlist_index(first.dim, index.depth_key(first.stage.layer))
    nlist = int(getattr(built, "nlist", 0))
    costs = [shortlist_cost(first.stage, spec, index.count, visited, nlist)]
    stored_bytes = np.dtype(index.manifest.vector_dtype).itemsize
    for step in trace[1:]:
        costs.append(rescore_cost(step.stage, step.scored, step.dim, index.dim, stored_bytes))
    return costs


def visited_per_query(index: Index, queries: np.ndarray, dim: int, n: int, layer: int | None = None) -> float | None:
    """Distance computations per query that FAISS reports for an hnsw or ivf shortlist; None for others.
    ``queries`` come from the same depth as the shortlist (``layer``)."""
    import faiss

    from funnel.indexes.shortlist import KIND_INFO

    spec, _ = index.segments[0].shortlist_index(dim, index.depth_key(layer))
    info = KIND_INFO[spec.kind]
    if not (info.graph or info.inverted):
        return None
    cvar: Any = faiss.cvar  # the stubs list only a few of FAISS's globals, not its search statistics
    stats = cvar.hnsw_stats if info.graph else cvar.indexIVF_stats
    stats.reset()
    index.shortlist(index.stored_queries(queries, layer), dim, n)
    return float(stats.ndis) / max(len(queries), 1)


def shortlist_bytes(index: Index, dim: int, layer: int | None = None) -> int:
    """Memory the ``dim``-dim shortlist indexes take (their serialized size, summed over segments)."""
    import faiss

    from funnel.indexes.shortlist import KIND_INFO

    total = 0
    key = index.depth_key(layer)
    for segment in index.segments:
        spec, built = segment.shortlist_index(dim, key)
        data = faiss.serialize_index_binary(built) if KIND_INFO[spec.kind].binary else faiss.serialize_index(built)
        total += int(data.size)
    return total
