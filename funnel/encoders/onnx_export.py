"""Export a sentence-transformers model to an ONNX graph (needs torch; runs once per model).

The graph is the whole embedding: the transformer and the model's own Pooling, Dense and
Normalize modules, traced with ``torch.onnx.export`` (the TorchScript exporter: the dynamo one
needs onnxscript, and sentence-transformers' ``backend="onnx"`` needs optimum-onnx, which cannot
sit beside transformers 5). Attention is traced in its eager form, which ONNX Runtime's transformer
optimizer recognizes and fuses (with the embeddings, skip layer norms and GELUs) into its own
kernels: 63 nodes instead of 689 for MiniLM, and a query encodes ~10% faster here. An export is
checked against torch on probe texts before it is kept; a fused graph that fails the check gives
way to the plain one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from funnel.checksums import file_sha256
from funnel.encoders.graph_cache import GRAPH_FILES, TOKENIZER_FILE, GraphMeta, staged, write_meta
from funnel.errors import ModelError
from funnel.models import Encoder

if TYPE_CHECKING:
    import torch

EXPORTABLE_MODULES = {"Transformer", "Pooling", "Dense", "Normalize"}
# Shapes the trace must not have fixed: one and several texts, short and truncated ones.
PROBE_TEXTS = (
    "a",
    "strategy game for two players",
    "Compression library for the deflate format, with bindings for several languages. " * 40,
)
MIN_COSINE = 0.99999
OPSET = 17


class NotExportable(ModelError):
    """The model's modules or its tokenizer have no faithful ONNX form here."""


def export_graph(encoder: Encoder, folder: Path, *, fuse: bool = True, depth: int | None = None) -> GraphMeta:
    """Export ``encoder``'s model into the graph folder ``folder`` (written beside it, renamed
    into place, checked against torch first); returns what the folder holds. ``fuse=False``
    keeps the traced graph as it is (benchmarks compare the two). ``depth``: export the model
    cut after that many transformer layers, with its own pooling and normalization (for stages
    that name a layer), checked against the full model's hidden states at that depth."""
    import torch

    model = encoder.model
    kinds = [type(module).__name__ for module in model]
    unsupported = [kind for kind in kinds if kind not in EXPORTABLE_MODULES]
    if unsupported or kinds[:1] != ["Transformer"]:
        raise NotExportable(
            f"the model's modules ({', '.join(kinds)}) have no ONNX export here (only {', '.join(sorted(EXPORTABLE_MODULES))})"
        )
    backend = getattr(model.tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise NotExportable("the model's tokenizer is not a fast (Rust) tokenizer, which the ONNX engine needs")
    layers = getattr(getattr(getattr(model[0], "auto_model", None), "encoder", None), "layer", None)
    if depth is not None and (layers is None or not 1 <= depth <= len(layers)):
        raise NotExportable(f"the model cannot be cut after layer {depth} (it has {len(layers or ())} transformer layers)")
    probe = model.tokenizer(
        list(PROBE_TEXTS[:2]),
        padding=True,
        truncation=True,
        max_length=model.max_seq_length or model.tokenizer.model_max_length,
        return_tensors="pt",
    )
    inputs = tuple(name for name in ("input_ids", "attention_mask", "token_type_ids") if name in probe)

    class Embedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.model(dict(zip(inputs, tensors)))["sentence_embedding"]

    with staged(folder) as staging:
        graph = staging / GRAPH_FILES["fp32"]
        axes = {name: {0: "batch", 1: "sequence"} for name in inputs} | {"embedding": {0: "batch"}}
        # The tracer warns about every shape-dependent branch; the probes below check the result.
        with (
            torch.no_grad(),
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            _evaluating(model),
            _eager_attention(model[0]),
            _cut(layers, depth),
        ):
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(
                    Embedding(),
                    tuple(probe[name].to(model.device) for name in inputs),
                    str(graph),
                    input_names=list(inputs),
                    output_names=["embedding"],
                    dynamic_axes=axes,
                    opset_version=OPSET,
                    dynamo=False,
                )
            except Exception as exc:  # the exporter raises many types for what it cannot trace
                raise NotExportable(f"torch.onnx.export could not export the model: {exc}") from exc
        backend.save(str(staging / TOKENIZER_FILE))
        plain = GraphMeta(
            model=encoder.name,
            dim=encoder.dim,
            max_seq_length=int(model.max_seq_length or model.tokenizer.model_max_length),
            inputs=inputs,
            files={GRAPH_FILES["fp32"]: file_sha256(graph), TOKENIZER_FILE: file_sha256(staging / TOKENIZER_FILE)},
            depth=depth,
        )
        meta = _fused(staging, plain, getattr(model[0], "auto_model", None)) if fuse else plain
        write_meta(staging, meta)
        try:
            _check_against_torch(encoder, staging)
        except NotExportable:
            if meta is plain:
                raise
            # The optimizer's rewrite is not faithful for this model: the traced graph stands.
            meta = plain
            os.replace(staging / PLAIN_GRAPH, graph)
            write_meta(staging, meta)
            _check_against_torch(encoder, staging)
        (staging / PLAIN_GRAPH).unlink(missing_ok=True)
    return meta


PLAIN_GRAPH = "model-plain.onnx"  # the traced graph, kept in the staging folder while the fused one is checked


def _fused(staging: Path, plain: GraphMeta, backbone: object) -> GraphMeta:
    """Fuse the staged graph with ONNX Runtime's transformer optimizer (BERT-shaped encoders:
    the traced graph moves to PLAIN_GRAPH, the fused one takes its name); returns the meta of
    what is at GRAPH_FILES["fp32"] then (``plain`` itself where nothing was fused)."""
    config = getattr(backbone, "config", None)
    heads, hidden = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
    if not isinstance(heads, int) or not isinstance(hidden, int):
        return plain
    graph = staging / GRAPH_FILES["fp32"]
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        # opt_level 0: the optimizer's own fusions only; ONNX Runtime adds its generic ones at load.
        optimized = optimize_model(str(graph), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0)
        fused = tuple(sorted(op for op, count in optimized.get_fused_operator_statistics().items() if count))
        if "Attention" not in fused:
            return plain
        os.replace(graph, staging / PLAIN_GRAPH)
        optimized.save_model_to_file(str(graph))
    except Exception:  # noqa: BLE001 - the optimizer raises many types on graphs it does not know; the plain graph stands
        if not graph.exists() and (staging / PLAIN_GRAPH).exists():
            os.replace(staging / PLAIN_GRAPH, graph)
        return plain
    return dataclasses.replace(plain, files={**plain.files, GRAPH_FILES["fp32"]: file_sha256(graph)}, fused=fused)


@contextlib.contextmanager
def _eager_attention(transformer: object) -> Iterator[None]:
    """Trace attention as plain matrix products and a softmax (the form ONNX Runtime's optimizer
    fuses), not the scaled-dot-product kernel, then put the model's own choice back."""
    backbone = getattr(transformer, "auto_model", None)
    config = getattr(backbone, "config", None)
    chosen = getattr(config, "_attn_implementation", None)
    if backbone is None or chosen in (None, "eager") or not hasattr(backbone, "set_attn_implementation"):
        yield
        return
    try:
        backbone.set_attn_implementation("eager")
    except (ValueError, ImportError):  # a model that has no eager form traces as it is
        yield
        return
    try:
        yield
    finally:
        backbone.set_attn_implementation(chosen)


@contextlib.contextmanager
def _evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Every module of ``model`` in eval mode inside the block, each one's own mode again after.
    (Restoring only the top module's flag would set every submodule to it: a SentenceTransformer
    loads with its top module in train mode and its layers in eval, and calling the layers
    directly after an export would then run their dropout.)"""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def _cut(layers: torch.nn.ModuleList | None, depth: int | None) -> Iterator[None]:
    """The model's first ``depth`` transformer layers alone inside the block, all of them again
    after (a cut graph is traced through the model's own forward)."""
    if layers is None or depth is None or depth == len(layers):
        yield
        return
    kept = list(layers)
    del layers[depth:]
    try:
        yield
    finally:
        layers.extend(kept[depth:])


def _check_against_torch(encoder: Encoder, staging: Path) -> None:
    from funnel.encoders.onnx_engine import OnnxEncoder

    exported = OnnxEncoder.load(staging)
    texts = list(PROBE_TEXTS)
    reference = encoder.encode(texts) if exported.depth is None else _torch_at_depth(encoder, exported.depth, texts)
    cosine = np.minimum(
        (exported.encode(texts) * reference).sum(axis=1),
        (np.vstack([exported.encode([text]) for text in texts]) * reference).sum(axis=1),
    ).min()
    if cosine < MIN_COSINE:
        raise NotExportable(f"the exported graph's vectors differ from torch's (cosine {cosine:.6f} < {MIN_COSINE})")


def _torch_at_depth(encoder: Encoder, depth: int, texts: list[str]) -> np.ndarray:
    """torch's embeddings of ``texts`` from the model cut after ``depth`` layers: the full
    model's hidden states at that depth through its own pooling and normalization."""
    import torch

    from funnel.vectors import normalize

    model = encoder.model
    backbone: Any = model[0].auto_model
    features = model.preprocess(texts)
    inputs = {name: value for name, value in features.items() if name in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.inference_mode(), _evaluating(model):
        embedded = {
            "token_embeddings": backbone(**inputs, output_hidden_states=True).hidden_states[depth],
            "attention_mask": features["attention_mask"],
        }
        for module in list(model)[1:]:
            embedded = module(embedded)
    return normalize(embedded["sentence_embedding"].float().numpy())


@dataclass(frozen=True)
class Int8Setting:
    """One way to quantize a graph's weights to 8 bits with onnxruntime's dynamic quantization
    (activations stay in float and are quantized per call)."""

    per_channel: bool = False  # one scale per output channel of each weight, not one per tensor
    reduce_range: bool = False  # 7-bit weights: avoids saturating the u8s8 multiply on CPUs without VNNI (avx2)
    unsigned_weights: bool = False  # QUInt8 weights (u8u8), else QInt8 (u8s8, what VNNI and avx2 run fastest)
    matmul_only: bool = False  # quantize only MatMul: the embedding Gather (and attention) stay float


INT8_SETTINGS: dict[str, Int8Setting] = {
    "per-tensor": Int8Setting(),
    "per-channel": Int8Setting(per_channel=True),
    "per-channel-reduce-range": Int8Setting(per_channel=True, reduce_range=True),
    "matmul-only": Int8Setting(matmul_only=True),
    "matmul-only-per-channel": Int8Setting(per_channel=True, matmul_only=True),
    "uint8-reduce-range": Int8Setting(reduce_range=True, unsigned_weights=True),
}
"""The settings benchmarks/query_int8.py compares (quality and speed in its results README)."""
DEFAULT_INT8 = "per-channel"  # measured best: benchmarks/results/query-int8


def quantize_file(source: Path, target: Path, setting: Int8Setting) -> None:
    """Write an 8-bit copy of the graph ``source`` at ``target`` under ``setting``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QUInt8 if setting.unsigned_weights else QuantType.QInt8,
        per_channel=setting.per_channel,
        reduce_range=setting.reduce_range,
        op_types_to_quantize=["MatMul"] if setting.matmul_only else None,
        # Shape inference does not type the outputs of ONNX Runtime's fused operators: they are float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def quantize_graph(folder: Path, setting: str = DEFAULT_INT8) -> GraphMeta:
    """Add an 8-bit copy of the folder's fp32 graph (:data:`INT8_SETTINGS`; the default,
    per-channel QInt8 weights with activations in float, kept the most quality at the same speed);
    returns the updated meta."""
    meta = GraphMeta.read(folder)
    name = GRAPH_FILES["int8"]
    if name in meta.files:
        return meta
    source = meta.check(folder, GRAPH_FILES["fp32"])
    temp = folder / f".{name}.tmp-{os.getpid()}"
    try:
        quantize_file(source, temp, INT8_SETTINGS[setting])
        digest = file_sha256(temp)
        os.replace(temp, folder / name)
    finally:
        temp.unlink(missing_ok=True)
    updated = dataclasses.replace(meta, files={**meta.files, name: digest})
    write_meta(folder, updated)
    return updated
