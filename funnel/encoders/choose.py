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

from funnel.encoders.graph_cache import GRAPH_FILES, META_FILE, GraphMeta, Precision, graph_folder, record_refusal, recorded_refusal
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
        refused = recorded_refusal(folder)
        if refused is not None and engine != "auto":
            raise ModelError(refused)
        encoder = Encoder.load(model, device=device)
        try:
            if refused is not None:
                raise ModelError(refused)
            _exported(encoder, folder)
        except ModelError as exc:
            if engine != "auto":
                raise
            log.warning("queries run on torch: %s", exc)
            return encoder
    return _open(folder, precision, engine)


def _open(folder: Path, precision: Precision, engine: QueryEngine) -> TextEncoder:
    from funnel.encoders.onnx_engine import OnnxEncoder

    meta = GraphMeta.read(folder)
    if meta.kind == "static":
        from funnel.encoders.static_engine import StaticEncoder

        if engine == "onnx-int8":
            raise InputError("a static model has no int8 graph (its queries cost microseconds in float): use --query-encoder auto")
        return StaticEncoder.load(folder)
    if precision == "int8" and GRAPH_FILES["int8"] not in meta.files:
        from funnel.encoders.onnx_export import quantize_graph

        quantize_graph(folder)
    return OnnxEncoder.load(folder, precision)


def open_graph(folder: Path) -> TextEncoder:
    """The engine of a graph folder as it was exported: a static model's numpy tables, else the
    fp32 ONNX graph (a query encoder stored in an index, say)."""
    return _open(folder, "fp32", "auto")


def engine_name(encoder: TextEncoder) -> str:
    """``torch``, ``onnx-fp32`` or ``onnx-int8``: what a report says the queries ran on."""
    precision = getattr(encoder, "precision", None)
    if precision is None or precision == "static":
        return "torch" if precision is None else "static"
    return f"onnx-{precision}"


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


def load_cut_encoder(model: str | os.PathLike[str] | None, depth: int, *, encoder: Encoder | None = None) -> OnnxEncoder:
    """The graph of the model cut after ``depth`` layers, exported on first use (with
    ``encoder``, the model already loaded, else loaded for the export); ModelError, recorded like
    a refused export, where the model has none."""
    from funnel.encoders.onnx_engine import OnnxEncoder

    folder = graph_folder(resolve_model(model), depth)
    if not (folder / META_FILE).exists():
        refused = recorded_refusal(folder)
        if refused is not None:
            raise ModelError(refused)
        _exported(encoder or Encoder.load(model), folder, depth)
    return OnnxEncoder.load(folder)


def _exported(encoder: Encoder, folder: Path, depth: int | None = None) -> Path:
    """The model's graph folder, exported now if it is not there; a model that cannot be
    exported faithfully is recorded as such, so later searches go straight to torch."""
    if not (folder / META_FILE).exists():
        from funnel.encoders.onnx_export import NotExportable, export_graph
        from funnel.encoders.static_engine import export_static, is_static

        refused = recorded_refusal(folder)
        if refused is not None:
            raise NotExportable(refused)
        try:
            if depth is not None:
                export_graph(encoder, folder, depth=depth)
            else:
                (export_static if is_static(encoder) else export_graph)(encoder, folder)
        except NotExportable as exc:
            record_refusal(folder, str(exc))
            raise
    return folder
