"""Encode a corpus straight into a Qdrant collection, on this process or with Ray; no index folder."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from funnel.backends.qdrant import ExportOptions, ExportSummary, QdrantLayout, upload
from funnel.errors import InputError

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

    from funnel.backends.ray_build import RayOptions
    from funnel.corpus import Corpus
    from funnel.indexes.builder import IndexConfig
    from funnel.models import Encoder


def layout_of_config(encoder: Encoder, config: IndexConfig, options: ExportOptions) -> QdrantLayout:
    """The collection a build with ``config`` would make: its shortlist dims get HNSW.

    A build into Qdrant streams each batch out as it is encoded, so there is no corpus to fit a
    rotation on before the first upload: ``rotation="auto"`` keeps the model's order (what auto
    picks where it cannot measure), and ``"pca"`` is refused. A rotated collection comes from
    exporting a local index (``funnel export``), which carries its rotation."""
    if config.layers:
        raise InputError("a Qdrant collection holds the full model's vectors only: drop --layers")
    if config.rotation == "pca":
        raise InputError(
            "a build into Qdrant streams vectors as the model gives them and cannot fit a rotation: "
            "build a local index with --rotation pca and `funnel export` it, or pass --rotation none"
        )
    shortlists = config.resolved_shortlists(encoder.dim, encoder.metadata)
    return QdrantLayout(
        model=encoder.name,
        dim=encoder.dim,
        shortlist_dims=tuple(spec.dim for spec in shortlists),
        rescore_dims=options.rescore_dims,
        quantization=options.quantization,
        vector_dtype=config.vector_dtype,
        model_metadata=encoder.metadata,
        upload_batch=options.batch_size,
    )


def build_to_qdrant(
    corpus: Corpus,
    encoder: Encoder,
    config: IndexConfig,
    client: QdrantClient,
    options: ExportOptions,
    *,
    location: str = "qdrant",
    ray: RayOptions | None = None,
    show_progress: bool = False,
) -> ExportSummary:
    """Encode ``corpus`` (here, or with Ray when ``ray`` is given: parquet only) and upload it to a
    collection; the collection equals an export of the index a local build would write."""
    layout = layout_of_config(encoder, config, options)
    if ray is None:
        from funnel.layers import encode_corpus

        total = corpus.validate()
        batches: Iterator[Any] = encode_corpus(corpus, encoder, batch_size=config.encode_batch_size)
        return upload(batches, client, layout, options, total=total, location=location, show_progress=show_progress)
    from funnel.backends.ray_build import ShardedCorpus, encode_with_ray

    if not isinstance(corpus, ShardedCorpus):
        raise InputError("a Ray build reads parquet: open the corpus with funnel.backends.ray_build.sharded_corpus")

    def send(batches: Iterator[Any]) -> ExportSummary:
        return upload(batches, client, layout, options, location=location, show_progress=show_progress)

    return encode_with_ray(corpus, encoder, ray, send, encode_batch_size=config.encode_batch_size)
