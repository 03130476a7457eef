"""Which engine encodes a corpus: torch, or the model's ONNX graph where that is faster here.

Which one wins depends on the machine, its load and the texts (benchmarks/results/corpus-engine: on
these 2 cores the fused fp32 graph encoded short package descriptions 1.27× and long abstracts
1.48× as fast as torch when quiet; the unfused graph lost on long texts under load). So ``auto``
does not guess: it races the two on the
corpus's own first texts (each engine encodes a slice the build needs anyway, after a short
warm-up), compares characters per second, and encodes the rest on the winner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from funnel.encoders.choose import TextEncoder, load_query_encoder, prepare_query_graph
from funnel.errors import InputError, ModelError
from funnel.models import QUERY_TEXTS, Encoder

CorpusEngine = Literal["auto", "torch", "onnx"]
CORPUS_ENGINES: tuple[str, ...] = get_args(CorpusEngine)
RACE_TEXTS = 64  # texts each engine encodes in the race: a few seconds of long passages
ONNX_BATCH = 16  # fastest for the fused graph on short and long texts alike (benchmarks/results/corpus-engine)
log = logging.getLogger("funnel")


def parse_corpus_engine(text: str) -> CorpusEngine:
    if text not in CORPUS_ENGINES:
        raise InputError(f"corpus encoder {text!r} is not one funnel knows: choose {', '.join(CORPUS_ENGINES)}")
    return text  # type: ignore[return-value]


@dataclass
class RacedEncoder:
    """Encodes a corpus on the faster of torch and the ONNX graph, measured on its first texts.
    ``rates``: characters per second each engine reached in the race; ``winner`` once decided."""

    torch: Encoder
    onnx: TextEncoder
    rates: dict[str, float] = field(default_factory=dict)
    winner: str | None = None

    @property
    def name(self) -> str:
        return self.torch.name

    @property
    def dim(self) -> int:
        return self.torch.dim

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Encode texts; returns float32 array of shape (len(texts), dim), rows L2-normalized."""
        parts = []
        start = 0
        while self.winner is None and start < len(texts):
            engine = "torch" if "torch" not in self.rates else "onnx"
            chunk = list(texts[start : start + RACE_TEXTS])
            parts.append(self._timed(engine, chunk, batch_size))
            start += len(chunk)
            if len(self.rates) == 2:
                self.winner = max(self.rates, key=lambda name: self.rates[name])
                log.info("corpus encoded on %s: %s characters/s", self.winner, _rates_text(self.rates))
        if start < len(texts):
            parts.append(self._on(self.winner or "torch", list(texts[start:]), batch_size, show_progress))
        return np.vstack(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

    def _timed(self, engine: str, texts: list[str], batch_size: int) -> np.ndarray:
        warm_up = [text[:64] for text in texts[: QUERY_TEXTS + 1]]  # past QUERY_TEXTS: the batch path, set up once
        self._on(engine, warm_up, batch_size, False)
        started = time.perf_counter()
        vectors = self._on(engine, texts, batch_size, False)
        self.rates[engine] = sum(len(text) for text in texts) / max(time.perf_counter() - started, 1e-9)
        return vectors

    def _on(self, engine: str, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        if engine == "torch":
            return self.torch.encode(texts, batch_size=batch_size, show_progress=show_progress)
        return self.onnx.encode(texts, batch_size=ONNX_BATCH, show_progress=show_progress)


def corpus_encoder(encoder: Encoder, engine: CorpusEngine = "auto") -> TextEncoder:
    """What encodes a corpus for ``encoder``'s model: torch itself (``torch``, a GPU, a model with
    no ONNX export under ``auto``), the fp32 graph (``onnx``), or the two raced (``auto``)."""
    if engine == "torch" or not isinstance(encoder, Encoder) or encoder.model.device.type != "cpu":
        return encoder  # a GPU, or vectors from a stand-in without a model: nothing to race
    if prepare_query_graph(encoder) is None:  # logs why the model has no graph
        if engine == "onnx":
            raise ModelError(f"{encoder.name} has no ONNX graph to encode the corpus with: use --corpus-encoder auto or torch")
        return encoder
    graph = load_query_encoder(encoder.name, "onnx")
    return graph if engine == "onnx" else RacedEncoder(encoder, graph)


def _rates_text(rates: dict[str, float]) -> str:
    return ", ".join(f"{name} {rate:,.0f}" for name, rate in rates.items())
