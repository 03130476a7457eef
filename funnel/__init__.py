"""funnel: two-stage retrieval on nested (Matryoshka) embeddings.

Shortlist candidates with a small FAISS index over the first dims of each embedding, then rescore
the shortlist with the full vectors::

    from funnel import Retriever
    retriever = Retriever.build("corpus.parquet", "indexes/docs")   # or Retriever.load("indexes/docs")
    hits = retriever.search("how do wings stall?", k=5)
    retriever.add("more.parquet"); retriever.delete(["id-1"]); retriever.compact()
"""

from __future__ import annotations

from funnel.corpus import CorpusColumns, open_corpus
from funnel.errors import FunnelError, IndexFormatError, InputError, ModelError
from funnel.indexes.builder import IndexConfig
from funnel.indexes.index import Index
from funnel.indexes.verify import verify_index
from funnel.models import Encoder
from funnel.retriever import Hit, Retriever, Searcher
from funnel.search.plan import Plan, Stage

__version__ = "0.1.0"


def __getattr__(name: str):
    # Heavy parts load on first use so that `import funnel` stays fast.
    if name in ("evaluate", "EvalOptions"):
        from funnel.evaluation import harness

        return getattr(harness, name)
    if name == "LayeredEncoder":
        from funnel.layers import LayeredEncoder

        return LayeredEncoder
    raise AttributeError(f"module 'funnel' has no attribute {name!r}")


__all__ = [
    "CorpusColumns",
    "Encoder",
    "EvalOptions",
    "FunnelError",
    "Hit",
    "Index",
    "IndexConfig",
    "IndexFormatError",
    "LayeredEncoder",
    "InputError",
    "ModelError",
    "Plan",
    "Retriever",
    "Searcher",
    "Stage",
    "evaluate",
    "open_corpus",
    "verify_index",
]
