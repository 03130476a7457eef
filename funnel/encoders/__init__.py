"""One encoder interface, two engines: torch (sentence-transformers: training, GPUs, any model;
:class:`funnel.models.Encoder`) and ONNX Runtime (:class:`OnnxEncoder`: queries on CPU without
importing torch). :func:`load_query_encoder` picks the engine a search runs on."""

from funnel.encoders.choose import QUERY_ENGINES, QueryEngine, TextEncoder, load_query_encoder, prepare_query_graph
from funnel.encoders.onnx_engine import OnnxEncoder

__all__ = ["QUERY_ENGINES", "OnnxEncoder", "QueryEngine", "TextEncoder", "load_query_encoder", "prepare_query_graph"]
