"""The ONNX Runtime query engine: the torch model's vectors without torch, checked graphs, and
a clear way back to torch where a model has no export."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from funnel.encoders import OnnxEncoder, load_query_encoder, prepare_query_graph
from funnel.encoders.graph_cache import GRAPH_FILES, META_FILE, GraphMeta, graph_folder
from funnel.errors import InputError, ModelError
from funnel.indexes.index import Index
from funnel.models import Encoder, resolve_model
from funnel.retriever import Retriever

TEXTS = [
    "a",
    "play a puzzle game over the network",
    "Lossless data-compression library for the deflate format. " * 60,  # past 256 tokens: truncated
    "Ünïcödé façade — naïve café ☕",
    "x" * 3,
]


@pytest.fixture(scope="session")
def graph(encoder) -> Path:
    folder = prepare_query_graph(encoder)
    assert folder is not None
    return folder


def test_the_onnx_engine_gives_torchs_vectors_one_by_one_and_in_batches(encoder, graph):
    onnx = load_query_encoder(None, "onnx")
    assert isinstance(onnx, OnnxEncoder) and onnx.dim == encoder.dim == 384 and onnx.name == encoder.name
    reference = encoder.encode(TEXTS)
    single = np.vstack([onnx.encode([text]) for text in TEXTS])
    # Past QUERY_TEXTS: the batch session, batched longest-first and put back in order.
    batches = onnx.encode(TEXTS * 3, batch_size=4)
    for got in (single, *np.split(batches, 3)):
        assert got.dtype == np.float32 and got.shape == reference.shape
        assert (got * reference).sum(axis=1).min() >= 0.99999
    assert onnx.encode([]).shape == (0, 384)


def test_the_graph_runs_onnx_runtimes_fused_attention_and_the_model_keeps_its_own(encoder, graph):
    import onnx

    meta = GraphMeta.read(graph)
    assert {"Attention", "SkipLayerNormalization"} <= set(meta.fused)
    ops = [node.op_type for node in onnx.load(str(graph / GRAPH_FILES["fp32"]), load_external_data=False).graph.node]
    assert ops.count("Attention") == 6 and "Softmax" not in ops, "one fused kernel a layer, no attention left in pieces"
    # Exporting traced attention in its eager form; the loaded model runs its own again after.
    assert encoder.model[0].auto_model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("stages", [None, "full:5", "64:60,128:20,full:5"])  # compiled; exact scan; rescoring float16 rows
def test_a_search_loads_neither_torch_nor_sentence_transformers(sample_index, graph, encoder, stages):
    script = (
        "import sys, json; from funnel import Retriever;"
        f"hits = Retriever.load({str(sample_index)!r}).search('play a puzzle game over the network', k=5, stages={stages!r});"
        "print(json.dumps([[h.id for h in hits], sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules)]))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=os.environ)
    assert result.returncode == 0, result.stderr
    ids, heavy = json.loads(result.stdout)
    assert heavy == []
    torch_ids = [
        hit.id for hit in Retriever(Index.load(sample_index), encoder).search("play a puzzle game over the network", k=5, stages=stages)
    ]
    assert ids == torch_ids


def test_a_server_loads_no_torch(sample_index, graph):
    script = (
        "import sys; from pathlib import Path; from funnel.serve.runner import load_retrievers; from funnel.serve.app import create_app;"
        "from funnel.serve.settings import ServeLimits;"
        f"retrievers = load_retrievers({{'debian': Path({str(sample_index)!r})}}); create_app(retrievers, ServeLimits());"
        "print(type(retrievers['debian'].encoder).__name__, [m for m in ('torch', 'sentence_transformers') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=os.environ)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["OnnxEncoder", "[]"]


def test_the_cli_search_imports_no_torch(sample_index, graph):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "funnel", "search", str(sample_index), "puzzle game", "-k", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "onnxruntime" in imported and not imported & {"torch", "sentence_transformers", "transformers"}
    assert len(json.loads(result.stdout)["hits"]) == 2


def copy_of(graph: Path, tmp_path: Path, monkeypatch) -> Path:
    """A private cache holding a copy of the default model's graph."""
    monkeypatch.setenv("FUNNEL_CACHE", str(tmp_path / "cache"))
    folder = graph_folder(resolve_model(None))
    shutil.copytree(graph, folder)
    return folder


def test_a_damaged_graph_is_refused_not_used(graph, tmp_path, monkeypatch):
    folder = copy_of(graph, tmp_path, monkeypatch)
    model = folder / GRAPH_FILES["fp32"]
    with model.open("r+b") as handle:  # one byte in the middle of the weights
        handle.seek(model.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelError, match=r"model\.onnx does not match its checksum .*delete"):
        load_query_encoder(None, "auto")
    (folder / META_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        load_query_encoder(None, "onnx")


def test_a_missing_graph_is_exported_once_then_reused(encoder, tmp_path, monkeypatch):
    monkeypatch.setenv("FUNNEL_CACHE", str(tmp_path / "cache"))
    folder = prepare_query_graph(encoder)
    assert folder is not None and folder.parent.parent == tmp_path / "cache"
    meta = GraphMeta.read(folder)
    assert (meta.model, meta.dim, meta.max_seq_length) == (encoder.name, 384, 256)
    stamp = (folder / GRAPH_FILES["fp32"]).stat().st_mtime_ns
    assert prepare_query_graph(encoder) == folder and (folder / GRAPH_FILES["fp32"]).stat().st_mtime_ns == stamp
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name], "no staging folder left behind"


def test_a_static_model_runs_on_numpy_with_torchs_vectors(tmp_path, monkeypatch):
    from funnel.encoders.static_engine import StaticEncoder
    from funnel.training.static import static_from_tokenizer

    path = tmp_path / "static-model"
    static_from_tokenizer(resolve_model(None), 32).save(str(path))
    monkeypatch.setenv("FUNNEL_CACHE", str(tmp_path / "cache"))
    chosen = load_query_encoder(str(path), "auto")
    assert isinstance(chosen, StaticEncoder) and chosen.dim == 32
    texts = [*TEXTS, "", "   "]  # nothing to embed: a zero row, as torch gives
    torch_vectors = Encoder.load(str(path)).encode(texts)
    np.testing.assert_allclose(chosen.encode(texts), torch_vectors, atol=1e-6)
    np.testing.assert_allclose(np.vstack([chosen.encode([t]) for t in texts]), torch_vectors, atol=1e-6)
    assert isinstance(load_query_encoder(str(path), "onnx"), StaticEncoder)
    with pytest.raises(InputError, match="a static model has no int8 graph"):
        load_query_encoder(str(path), "onnx-int8")


def test_a_model_without_an_export_runs_on_torch_with_a_note_and_is_not_retried(tmp_path, monkeypatch, caplog):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import LayerNorm

    from funnel.encoders.graph_cache import refusal_file
    from funnel.training.static import static_from_tokenizer

    path = tmp_path / "custom-model"
    static = static_from_tokenizer(resolve_model(None), 32)
    SentenceTransformer(modules=[static[0], LayerNorm(32)], device="cpu").save(str(path))
    monkeypatch.setenv("FUNNEL_CACHE", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="funnel"):
        chosen = load_query_encoder(str(path), "auto")
    assert isinstance(chosen, Encoder) and chosen.dim == 32
    assert any("queries run on torch" in record.getMessage() and "LayerNorm" in record.getMessage() for record in caplog.records)
    marker = refusal_file(graph_folder(path))
    assert marker.exists(), "the refusal is recorded"
    stamp = marker.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="funnel"):
        again = load_query_encoder(str(path), "auto")
    assert isinstance(again, Encoder) and marker.stat().st_mtime_ns == stamp, "not exported again"
    assert any("recorded in" in record.getMessage() and "delete it to try again" in record.getMessage() for record in caplog.records)
    with pytest.raises(ModelError, match="no ONNX export"):
        load_query_encoder(str(path), "onnx")
    assert not [p for p in marker.parent.iterdir() if p.is_dir()], "no graph folder made"


def test_int8_is_a_separate_checked_graph(encoder, graph, tmp_path, monkeypatch):
    folder = copy_of(graph, tmp_path, monkeypatch)
    int8 = load_query_encoder(None, "onnx-int8")
    assert isinstance(int8, OnnxEncoder) and int8.precision == "int8"
    assert GRAPH_FILES["int8"] in GraphMeta.read(folder).files
    assert (folder / GRAPH_FILES["int8"]).stat().st_size < (folder / GRAPH_FILES["fp32"]).stat().st_size / 3
    cosine = (int8.encode(TEXTS[:2]) * encoder.encode(TEXTS[:2])).sum(axis=1)
    assert cosine.min() > 0.9  # close, not equal: why int8 is never the default


def test_an_unknown_engine_is_one_line(sample_index):
    result = subprocess.run(
        [sys.executable, "-m", "funnel", "search", str(sample_index), "q", "--query-encoder", "gpu"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "query encoder 'gpu' is not one funnel knows: choose auto, torch, onnx, onnx-int8" in result.stderr
