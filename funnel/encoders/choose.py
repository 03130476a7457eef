"""Which engine encodes the queries: ``auto`` (the default) takes the model's exported ONNX graph
(fp32, the same vectors as torch) when it exists or can be made, else torch with a note;
``onnx`` and ``onnx-int8`` insist on a graph; ``torch`` loads sentence-transformers."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

import numpy as np

from funnel.encoders.graph_cache import GRAPH_FILES, META_FILE, GraphMeta, Precision, graph_folder
from funnel.errors import InputError, ModelError
from funnel.models import Encoder, resolve_model

if TYPE_CHECKING:
    from funnel.encoders.onnx_engine import OnnxEncoder

QueryEngine = Literal["auto", "torch", "onnx", "onnx-int8"]
QUERY_ENGINES: tuple[str, ...] = get_args(QueryEngine)
log = logging.getLogger("funnel")


class TextEncoder(Protocol):
    """What a search needs from an engine: the model's name, its dim, and normalized vectors."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray: ...


def parse_engine(text: str) -> QueryEngine:
    if text not in QUERY_ENGINES:
        raise InputError(f"query encoder {text!r} is not one funnel knows: choose {', '.join(QUERY_ENGINES)}")
    return text  # type: ignore[return-value]


def load_query_encoder(
    model: str | os.PathLike[str] | None,
    engine: QueryEngine = "auto",
    *,
    device: str | None = None,
    auto_precision: Precision = "fp32",
) -> TextEncoder:
    """The encoder a search runs its queries on (see the module docstring). A ``device`` other
    than the CPU means torch. ``auto_precision``: the graph ``auto`` opens — int8 only where an
    index's tuning measured it (:func:`measured_precision`)."""
    if engine == "torch" or (device is not None and device != "cpu"):
        return Encoder.load(model, device=device)
    folder = graph_folder(resolve_model(model))
    precision: Precision = "int8" if engine == "onnx-int8" or (engine == "auto" and auto_precision == "int8") else "fp32"
    if not (folder / META_FILE).exists():
        encoder = Encoder.load(model, device=device)
        try:
            _exported(encoder, folder)
        except ModelError as exc:
            if engine != "auto":
                raise
            log.warning("queries run on torch: %s", exc)
            return encoder
    return _open(folder, precision)


def _open(folder: Path, precision: Precision) -> OnnxEncoder:
    from funnel.encoders.onnx_engine import OnnxEncoder

    if precision == "int8" and GRAPH_FILES["int8"] not in GraphMeta.read(folder).files:
        from funnel.encoders.onnx_export import quantize_graph

        quantize_graph(folder)
    return OnnxEncoder.load(folder, precision)


def engine_name(encoder: TextEncoder) -> str:
    """``torch``, ``onnx-fp32`` or ``onnx-int8``: what a report says the queries ran on."""
    precision = getattr(encoder, "precision", None)
    return f"onnx-{precision}" if precision is not None else "torch"


def measured_precision(plan_entry: dict[str, Any] | None) -> Precision:
    """The precision an index's tuning chose for ``auto`` queries, from its manifest's plan entry
    (fp32 when never measured; see :mod:`funnel.tuning.query_precision`)."""
    record = (plan_entry or {}).get("query_encoder") or {}
    return "int8" if record.get("precision") == "int8" else "fp32"


def prepare_query_graph(encoder: Encoder) -> Path | None:
    """Export ``encoder``'s model to its ONNX graph unless it is there already, so that searches
    start without torch; returns the graph folder, or None (with a logged note) for a model
    with no faithful export."""
    try:
        return _exported(encoder, graph_folder(resolve_model(encoder.name)))
    except ModelError as exc:
        log.warning("queries will run on torch: %s", exc)
        return None


def _exported(encoder: Encoder, folder: Path) -> Path:
    if not (folder / META_FILE).exists():
        from funnel.encoders.onnx_export import export_graph

        export_graph(encoder, folder)
    return folder
