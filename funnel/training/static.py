"""Static embedding models: a bag of token vectors, no transformer, thousands of texts per second.

Two starts, both offline: random vectors over the MiniLM tokenizer's vocabulary (the
static-embeddings recipe), or a model2vec distillation of a transformer (PCA'd token embeddings).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from funnel.errors import ModelError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


def static_from_tokenizer(tokenizer_model: Path, dim: int) -> SentenceTransformer:
    """A fresh StaticEmbedding of ``dim`` dims over ``tokenizer_model``'s tokenizer.json."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer

    path = Path(tokenizer_model) / "tokenizer.json"
    if not path.exists():
        raise ModelError(f"{tokenizer_model} has no tokenizer.json to build a static model from")
    return SentenceTransformer(modules=[StaticEmbedding(Tokenizer.from_file(str(path)), embedding_dim=dim)], device="cpu")


def static_from_distillation(teacher: Path, dim: int | None = 256) -> SentenceTransformer:
    """Distil ``teacher`` with model2vec into a StaticEmbedding of ``dim`` dims (PCA; None keeps
    the teacher's width and basis, as a query encoder into its space needs), offline."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    try:
        module = StaticEmbedding.from_distillation(str(teacher), pca_dims=dim, device="cpu")
    except ImportError as exc:
        raise ModelError("distilling a static model needs model2vec: pip install model2vec skeletoken") from exc
    return SentenceTransformer(modules=[module], device="cpu")
