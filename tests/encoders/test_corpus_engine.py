"""Which engine encodes a corpus: torch and the ONNX graph raced on the corpus's own first texts,
the faster kept, the model's vectors either way."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from helpers import SAMPLE

from funnel.encoders import OnnxEncoder
from funnel.encoders.corpus_engine import RACE_TEXTS, RacedEncoder, corpus_encoder, parse_corpus_engine
from funnel.errors import InputError, ModelError
from funnel.indexes.builder import IndexConfig


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return pq.read_table(SAMPLE, columns=["text"]).column("text").to_pylist()[:160]


def test_auto_races_both_engines_on_the_first_texts_and_keeps_the_faster(encoder, texts, caplog):
    raced = corpus_encoder(encoder, "auto")
    assert isinstance(raced, RacedEncoder) and raced.winner is None
    with caplog.at_level(logging.INFO, logger="funnel"):
        vectors = raced.encode(texts)
    assert set(raced.rates) == {"torch", "onnx"} and all(rate > 0 for rate in raced.rates.values())
    assert raced.winner == max(raced.rates, key=lambda name: raced.rates[name])
    assert any(f"corpus encoded on {raced.winner}" in record.getMessage() for record in caplog.records)
    # Whichever engine encoded a row, it is the model's vector, in the caller's order.
    reference = encoder.encode(texts)
    assert vectors.shape == reference.shape and (vectors * reference).sum(axis=1).min() >= 0.99999
    rates = dict(raced.rates)
    later = raced.encode(texts[:RACE_TEXTS])
    assert raced.rates == rates, "the race is run once"
    assert (later * reference[:RACE_TEXTS]).sum(axis=1).min() >= 0.99999


def test_torch_and_onnx_are_taken_as_asked(encoder):
    assert corpus_encoder(encoder, "torch") is encoder
    assert isinstance(corpus_encoder(encoder, "onnx"), OnnxEncoder)
    with pytest.raises(InputError, match="corpus encoder 'gpu' is not one funnel knows: choose auto, torch, onnx"):
        parse_corpus_engine("gpu")
    with pytest.raises(InputError, match="corpus encoder 'fast'"):
        IndexConfig(corpus_engine="fast")  # type: ignore[arg-type]


def test_a_model_without_a_graph_encodes_on_torch_unless_onnx_is_demanded(tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import LayerNorm

    from funnel.models import Encoder, resolve_model
    from funnel.training.static import static_from_tokenizer

    path = tmp_path / "custom-model"
    static = static_from_tokenizer(resolve_model(None), 32)
    SentenceTransformer(modules=[static[0], LayerNorm(32)], device="cpu").save(str(path))
    monkeypatch.setenv("FUNNEL_CACHE", str(tmp_path / "cache"))
    custom = Encoder.load(str(path))
    assert corpus_encoder(custom, "auto") is custom
    with pytest.raises(ModelError, match="has no ONNX graph to encode the corpus with: use --corpus-encoder auto or torch"):
        corpus_encoder(custom, "onnx")


def test_the_cli_builds_on_the_engine_it_is_given(tmp_path):
    def funnel(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "funnel", *args], capture_output=True, text=True, timeout=300)

    built = funnel("index", str(SAMPLE), "-o", str(tmp_path / "idx"), "--corpus-encoder", "onnx", "--no-lexical", "--json")
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["documents"] == 300
    bad = funnel("index", str(SAMPLE), "-o", str(tmp_path / "other"), "--corpus-encoder", "gpu")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "corpus encoder 'gpu' is not one funnel knows" in bad.stderr
    assert not (tmp_path / "other").exists()
