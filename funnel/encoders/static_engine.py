"""The static-model engine: a StaticEmbedding model's token table and tokenizer, run with numpy.

A static model (sentence-transformers' ``StaticEmbedding``, optionally followed by ``Normalize``)
embeds a text as the mean of its tokens' rows, so its engine needs no graph at all: the table is
saved once as ``embeddings.npy`` in the model's graph folder (checksummed like a graph), and a
query costs a tokenization and a few row reads — microseconds, without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from funnel.checksums import file_sha256
from funnel.encoders.graph_cache import STATIC_FILE, TOKENIZER_FILE, GraphMeta, staged, write_meta
from funnel.errors import ModelError
from funnel.models import Encoder
from funnel.vectors import normalize

if TYPE_CHECKING:
    from tokenizers import Tokenizer

STATIC_MODULES = ("StaticEmbedding", "Normalize")


def is_static(encoder: Encoder) -> bool:
    """Whether the model is a StaticEmbedding, alone or followed by Normalize."""
    kinds = [type(module).__name__ for module in encoder.model]
    return kinds[:1] == ["StaticEmbedding"] and all(kind in STATIC_MODULES for kind in kinds[1:])


def export_static(encoder: Encoder, folder: Path) -> GraphMeta:
    """Save the static model's token table and tokenizer into the graph folder ``folder``
    (written beside it and renamed into place once its vectors match torch's)."""
    module: Any = encoder.model[0]
    with staged(folder) as staging:
        table = module.embedding.weight.detach().cpu().numpy().astype(np.float32)
        np.save(staging / STATIC_FILE, table)
        module.tokenizer.save(str(staging / TOKENIZER_FILE))
        meta = GraphMeta(
            model=encoder.name,
            dim=encoder.dim,
            max_seq_length=0,
            inputs=(),
            files={STATIC_FILE: file_sha256(staging / STATIC_FILE), TOKENIZER_FILE: file_sha256(staging / TOKENIZER_FILE)},
            kind="static",
        )
        write_meta(staging, meta)
        _check_against_torch(encoder, staging)
    return meta


def _check_against_torch(encoder: Encoder, staging: Path) -> None:
    from funnel.encoders.onnx_export import MIN_COSINE, PROBE_TEXTS, NotExportable

    texts = list(PROBE_TEXTS)
    cosine = float((StaticEncoder.load(staging).encode(texts) * encoder.encode(texts)).sum(axis=1).min())
    if cosine < MIN_COSINE:
        raise NotExportable(f"the static model's numpy vectors differ from torch's (cosine {cosine:.6f} < {MIN_COSINE})")


@dataclass(eq=False)
class StaticEncoder:
    """A static model's texts-to-vectors without torch: L2-normalized means of token rows, the
    vectors :class:`funnel.models.Encoder` gives for the same model."""

    name: str
    dim: int
    table: np.ndarray = field(repr=False)  # (vocabulary, dim) float32
    tokenizer: Tokenizer = field(repr=False)
    precision: str = "static"

    @classmethod
    def load(cls, folder: Path) -> StaticEncoder:
        from tokenizers import Tokenizer

        meta = GraphMeta.read(folder)
        table = np.load(meta.check(folder, STATIC_FILE))
        if table.ndim != 2 or table.shape[1] != meta.dim:
            raise ModelError(f"{folder / STATIC_FILE} holds a {table.shape} table, not (vocabulary, {meta.dim}): delete {folder}")
        tokenizer = Tokenizer.from_file(str(meta.check(folder, TOKENIZER_FILE)))
        tokenizer.no_padding()  # as StaticEmbedding runs it; its truncation stays as saved
        return cls(meta.model, meta.dim, table, tokenizer)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Encode texts; returns float32 array of shape (len(texts), dim), rows L2-normalized
        (a text with no tokens gives a zero row, as the torch model does)."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids = [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]
        lengths = np.array([len(row) for row in ids])
        flat = np.fromiter((token for row in ids for token in row), dtype=np.int64, count=int(lengths.sum()))
        sums = np.zeros((len(texts), self.dim), dtype=np.float32)
        filled = lengths > 0
        if filled.any():
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[filled]
            sums[filled] = np.add.reduceat(self.table[flat], starts, axis=0) / lengths[filled, None]
        return normalize(sums)
