"""The ONNX Runtime engine: encode texts with an exported graph and the model's own fast
tokenizer, without importing torch or sentence-transformers (a cold start costs a fraction of a
second instead of seconds)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from funnel.encoders.graph_cache import GRAPH_FILES, TOKENIZER_FILE, GraphMeta, Precision
from funnel.errors import ModelError
from funnel.models import QUERY_TEXTS
from funnel.vectors import normalize

# Measured here (2 cores, one short MiniLM query, p50 quiet / with two busy processes): 1 thread
# 9.5 / 17.2 ms, 2 spinning threads 6.2 / 16.8 ms, 2 sleeping threads 7.0 / 11.2 ms.
QUERY_THREADS = min(2, os.cpu_count() or 1)

if TYPE_CHECKING:
    import onnxruntime
    from tokenizers import Tokenizer


@dataclass
class OnnxEncoder:
    """An exported model that turns texts into L2-normalized full-dimension embeddings, like
    :class:`funnel.models.Encoder` (same vectors within float error for fp32).

    Query-sized encodes (up to QUERY_TEXTS texts) run on QUERY_THREADS intra-op threads that
    sleep rather than spin when idle, so a query does not collapse when other processes use the
    cores; larger batches run on a second session with a thread per core, created on first use.
    """

    name: str  # the model, as Encoder.load takes it (for the torch engine where one is needed)
    dim: int
    precision: Precision
    graph: Path
    inputs: tuple[str, ...]
    tokenizer: Tokenizer = field(repr=False)
    query_session: onnxruntime.InferenceSession = field(repr=False)
    depth: int | None = None  # a graph of the model cut after this many layers (None: the whole model)
    _batch_session: onnxruntime.InferenceSession | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def load(cls, folder: Path, precision: Precision = "fp32") -> OnnxEncoder:
        """Open the graph folder ``folder`` (checked against its checksums)."""
        from tokenizers import Tokenizer

        meta = GraphMeta.read(folder)
        graph = meta.check(folder, GRAPH_FILES[precision])
        tokenizer = Tokenizer.from_file(str(meta.check(folder, TOKENIZER_FILE)))
        tokenizer.enable_truncation(meta.max_seq_length)
        tokenizer.enable_padding()
        session = _session(graph, threads=QUERY_THREADS)
        return cls(meta.model, meta.dim, precision, graph, meta.inputs, tokenizer, session, depth=meta.depth)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Encode texts; returns float32 array of shape (len(texts), dim), rows L2-normalized."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Batches run longest-first, so each pads to texts of about its own length (as
        # sentence-transformers orders them); the rows go back to the caller's order.
        order = np.argsort([-len(text) for text in texts], kind="stable") if len(texts) > batch_size else np.arange(len(texts))
        ordered = [texts[i] for i in order]
        with self._lock:  # a tokenizer with padding set is not safe from two threads at once
            session = self.query_session if len(texts) <= QUERY_TEXTS else self._batches()
            parts = [self._run(session, ordered[start : start + batch_size]) for start in _progress(len(texts), batch_size, show_progress)]
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        vectors[order] = np.vstack(parts)
        return normalize(vectors)

    def _run(self, session: onnxruntime.InferenceSession, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        feed = {name: np.asarray(columns[name], dtype=np.int64) for name in self.inputs}
        return np.asarray(session.run(None, feed)[0])

    def _batches(self) -> onnxruntime.InferenceSession:
        if self._batch_session is None:
            self._batch_session = _session(self.graph, threads=os.cpu_count() or 1)
        return self._batch_session


def _progress(count: int, batch_size: int, show: bool) -> Sequence[int]:
    starts = range(0, count, batch_size)
    if not show:
        return starts
    from tqdm.auto import tqdm

    return tqdm(starts, desc="encoding", unit="batch")


def _session(graph: Path, threads: int) -> onnxruntime.InferenceSession:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelError("the ONNX engine needs onnxruntime: pip install onnxruntime (or use --query-encoder torch)") from exc
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # its warnings about unused initializers are not the user's
    try:
        return onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for a damaged or foreign graph
        raise ModelError(f"ONNX Runtime could not open {graph}: {exc}") from exc
