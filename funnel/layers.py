"""Encode with the first L transformer layers, and continue deeper from where a shallow pass stopped.

A shallow stage of the funnel needs only the first few layers of the encoder for its query
vector; a later, deeper stage continues from those hidden states instead of starting over, so a
query costs exactly the layers its deepest stage needs. Works for BERT-like sentence-transformers
models (a Transformer module whose ``auto_model`` has ``embeddings`` and ``encoder.layer``),
followed by the model's own pooling and normalization modules.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from funnel.errors import InputError, ModelError
from funnel.vectors import normalize

if TYPE_CHECKING:
    import torch

    from funnel.corpus import Corpus
    from funnel.encoders.choose import TextEncoder
    from funnel.models import Encoder


@dataclass
class HiddenStates:
    """A batch's token states after ``layer`` layers. ``layers_run`` counts the layers computed
    to reach them, so compute accounting sees only what actually ran."""

    layer: int
    hidden: torch.Tensor
    mask: Any
    features: dict[str, Any]
    layers_run: int


class LayeredEncoder:
    """Layer-wise access to a BERT-like :class:`~funnel.models.Encoder`. Thread-safe like it."""

    def __init__(self, encoder: Encoder) -> None:
        transformer = encoder.model[0]
        backbone = getattr(transformer, "auto_model", None)
        if backbone is None or not hasattr(backbone, "embeddings") or not hasattr(getattr(backbone, "encoder", None), "layer"):
            raise ModelError(f"{encoder.name} has no transformer layers to stop early in (a static model?): the layer axis is absent")
        self.encoder = encoder
        self._backbone = backbone
        self._layers = backbone.encoder.layer
        self._head = list(encoder.model)[1:]  # pooling, normalization: applied after any layer

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def _check_layer(self, layer: int) -> None:
        if not 1 <= layer <= self.num_layers:
            raise InputError(f"layer {layer} does not exist: this model has layers 1..{self.num_layers}")

    def start(self, texts: Sequence[str]) -> HiddenStates:
        """Tokenize and embed ``texts``: the states before the first layer (layer 0)."""
        import torch
        from transformers.masking_utils import create_bidirectional_mask

        model = self.encoder.model
        model.eval()  # as SentenceTransformer.encode does: blocks called directly would otherwise run their dropout
        device = model.device
        features = {k: v.to(device) if hasattr(v, "to") else v for k, v in model.preprocess(list(texts)).items()}
        with self.encoder.exclusive(len(texts)), torch.inference_mode():
            hidden = self._backbone.embeddings(input_ids=features["input_ids"], token_type_ids=features.get("token_type_ids"))
            mask = create_bidirectional_mask(config=self._backbone.config, inputs_embeds=hidden, attention_mask=features["attention_mask"])
        return HiddenStates(0, hidden, mask, features, 0)

    def advance(self, states: HiddenStates, layer: int) -> HiddenStates:
        """Run layers ``states.layer + 1 .. layer`` on ``states``; the input is left unchanged."""
        import torch

        self._check_layer(layer)
        if layer < states.layer:
            raise InputError(f"cannot go back from layer {states.layer} to layer {layer}: encode again from the start")
        hidden = states.hidden
        with self.encoder.exclusive(len(hidden)), torch.inference_mode():
            for block in self._layers[states.layer : layer]:
                output = block(hidden, attention_mask=states.mask)
                hidden = output[0] if isinstance(output, tuple) else output
        return HiddenStates(layer, hidden, states.mask, states.features, states.layers_run + layer - states.layer)

    def embed(self, states: HiddenStates) -> np.ndarray:
        """Pool the states with the model's own head; (n, dim) float32, rows L2-normalized."""
        import torch

        features: dict[str, Any] = {"token_embeddings": states.hidden, "attention_mask": states.features["attention_mask"]}
        with torch.inference_mode():
            for module in self._head:
                features = module(features)
        return normalize(features["sentence_embedding"].float().cpu().numpy())

    def encode(self, texts: Sequence[str], layer: int, batch_size: int = 64) -> np.ndarray:
        """Embeddings from the first ``layer`` layers: (len(texts), dim), rows L2-normalized."""
        return self.encode_layers(texts, [layer], batch_size)[layer]

    def encode_layers(self, texts: Sequence[str], layers: Sequence[int], batch_size: int = 64) -> dict[int, np.ndarray]:
        """One pass through the deepest layer asked for, taking each listed layer on the way."""
        wanted = sorted(set(layers))
        for layer in wanted:
            self._check_layer(layer)
        out = {layer: np.zeros((len(texts), self.encoder.dim), dtype=np.float32) for layer in wanted}
        # Length-sorted batches waste less compute on padding, as sentence-transformers does.
        order = np.argsort([-len(text) for text in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            states = self.start([texts[i] for i in rows])
            for layer in wanted:
                states = self.advance(states, layer)
                out[layer][rows] = self.embed(states)
        return out


def encode_documents(
    encoder: TextEncoder, texts: Sequence[str], layers: Sequence[int] = (), batch_size: int = 64
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Full-depth vectors of ``texts`` and, for each of ``layers``, the vectors of the model cut
    after that many layers, from one pass through the encoder (which must then be the torch
    :class:`~funnel.models.Encoder`). Without layers: a plain encode on any engine."""
    if not layers:
        return encoder.encode(list(texts), batch_size=batch_size), {}
    from funnel.models import Encoder

    if not isinstance(encoder, Encoder):
        raise ModelError("stored layers are encoded by the torch engine: pass the model's Encoder")
    layered = LayeredEncoder(encoder)
    by_layer = layered.encode_layers(texts, [*layers, layered.num_layers], batch_size)
    full = by_layer.pop(layered.num_layers)
    return full, {layer: by_layer[layer] for layer in layers}


def encode_corpus(
    corpus: Corpus,
    encoder: TextEncoder,
    layers: Sequence[int] = (),
    batch_size: int = 64,
    *,
    skip: int = 0,
    total: int | None = None,
    show_progress: bool = False,
) -> Iterator[tuple[Any, ...]]:
    """The corpus's documents with their vectors, batch by batch: (documents, vectors), or
    (documents, vectors, {layer: vectors}) when ``layers`` are asked for. The first ``skip`` rows
    are read (their ids still checked by the reader) but not encoded, as a resumed build needs.
    ``total``: the row count for the progress bar (shown on stderr with ``show_progress``)."""
    from tqdm.auto import tqdm

    from funnel.corpus import document_text

    with tqdm(total=total, unit="doc", desc="encoding", disable=not show_progress) as bar:
        for documents in corpus.batches():
            bar.update(documents.num_rows)
            if skip >= documents.num_rows:
                skip -= documents.num_rows
                continue
            if skip:
                documents, skip = documents.slice(skip), 0
            texts = [document_text(t, x) for t, x in zip(documents.column("title").to_pylist(), documents.column("text").to_pylist())]
            vectors, by_layer = encode_documents(encoder, texts, layers, batch_size)
            yield (documents, vectors, by_layer) if layers else (documents, vectors)
