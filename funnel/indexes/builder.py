"""Build an index folder from a corpus: encode once, write everything, rename into place.

Nothing is ever written into the final folder: the build happens in ``.NAME.tmp-XXXX`` beside it
and is renamed with ``os.replace`` at the end, so an interrupted build leaves nothing that loads.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import pyarrow as pa

from funnel.corpus import Corpus, document_text
from funnel.errors import InputError
from funnel.indexes import shortlist
from funnel.indexes.manifest import Manifest, ShortlistSpec, write_manifest_atomically
from funnel.indexes.segment import SegmentWriter

if TYPE_CHECKING:
    from funnel.models import Encoder

VECTOR_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class IndexConfig:
    """How to build an index. ``shortlists`` empty means: one flat index at ``default_shortlist_dim``."""

    shortlists: tuple[ShortlistSpec, ...] = ()
    vector_dtype: str = "float16"
    encode_batch_size: int = 64
    default_shortlist_dim: int = 64

    def __post_init__(self) -> None:
        if self.vector_dtype not in VECTOR_DTYPES:
            raise InputError(f"vector dtype {self.vector_dtype!r} is not supported: choose {' or '.join(VECTOR_DTYPES)}")
        if self.encode_batch_size < 1:
            raise InputError(f"batch size must be at least 1, not {self.encode_batch_size}")

    def resolved_shortlists(self, full_dim: int, model_metadata: dict[str, Any]) -> tuple[ShortlistSpec, ...]:
        specs = self.shortlists or (shortlist.make_spec(default_shortlist_dim(full_dim, model_metadata, self.default_shortlist_dim)),)
        for spec in specs:
            if not 1 <= spec.dim <= full_dim:
                raise InputError(f"shortlist dim {spec.dim} does not fit the model's {full_dim} dims: choose 1..{full_dim}")
        return specs


def default_shortlist_dim(full_dim: int, model_metadata: dict[str, Any], fallback: int) -> int:
    """A model trained with nested dims shortlists at its smallest trained dim of at least 32."""
    trained = sorted(d for d in model_metadata.get("nested_dims", []) if 32 <= d < full_dim)
    return trained[0] if trained else min(fallback, full_dim)


def build_index(
    corpus: Corpus,
    encoder: "Encoder",
    path: str | Path,
    config: IndexConfig = IndexConfig(),
    *,
    overwrite: bool = False,
    show_progress: bool = False,
) -> Path:
    """Encode ``corpus`` with ``encoder`` and write an index folder at ``path``; returns the path.

    The corpus is validated in a first, cheap pass: a bad row stops the build before encoding.
    """
    corpus.validate()
    return write_index(
        _encoded_batches(corpus, encoder, config, show_progress),
        path,
        model=encoder.name,
        dim=encoder.dim,
        config=config,
        model_metadata=encoder.metadata,
        source={"path": str(corpus.path), "format": corpus.format, "skipped": corpus.skipped},
        overwrite=overwrite,
    )


def write_index(
    batches: Iterable[tuple[pa.RecordBatch, np.ndarray]],
    path: str | Path,
    *,
    model: str,
    dim: int,
    config: IndexConfig = IndexConfig(),
    model_metadata: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an index from documents (in :data:`~funnel.corpus.DOCUMENT_SCHEMA`) with their
    normalized full vectors, e.g. vectors computed elsewhere; ``model`` names what made them."""
    target = Path(path).expanduser()
    if target.exists() and not overwrite:
        raise InputError(f"{target} already exists: choose another --output or pass --overwrite")
    metadata = model_metadata or {}
    specs = config.resolved_shortlists(dim, metadata)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        writer = SegmentWriter(temp / "seg-000000", dim, config.vector_dtype)
        try:
            for documents, vectors in batches:
                writer.append(documents, vectors)
        except BaseException:
            writer.abort()
            raise
        if writer.count == 0:
            raise InputError("no documents to index")
        manifest = Manifest(
            model=model,
            dim=dim,
            vector_dtype=config.vector_dtype,
            shortlists=specs,
            segments=(writer.finish(specs),),
            model_metadata=metadata,
            source=source or {},
        )
        write_manifest_atomically(temp, manifest)
        _swap_into_place(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return target


def _encoded_batches(
    corpus: Corpus, encoder: "Encoder", config: IndexConfig, show_progress: bool
) -> Iterable[tuple[pa.RecordBatch, np.ndarray]]:
    from tqdm.auto import tqdm

    with tqdm(total=corpus.validate(), unit="doc", desc="encoding", disable=not show_progress) as bar:
        for documents in corpus.batches():
            titles = documents.column("title").to_pylist()
            texts = documents.column("text").to_pylist()
            vectors = encoder.encode([document_text(t, x) for t, x in zip(titles, texts)], batch_size=config.encode_batch_size)
            yield documents, vectors
            bar.update(documents.num_rows)


def _swap_into_place(temp: Path, target: Path) -> None:
    if not target.exists():
        temp.rename(target)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    retired.rmdir()
    target.rename(retired)
    temp.rename(target)
    shutil.rmtree(retired, ignore_errors=True)
