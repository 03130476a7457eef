"""Training losses: a base loss (MNRL, cached MNRL, CoSENT, GISTEmbed) wrapped in a nesting scheme.

sentence-transformers provides MatryoshkaLoss (dims) and Matryoshka2dLoss (random sub-layer x
dims). It has no Starbucks loss (Zhuang et al., 2024: a fixed list of (layer, dim) pairs, every
pair trained at every step, losses summed), so :class:`StarbucksLoss` is written here in the same
shape: an ``nn.Module`` wrapping any base loss, swapping the model's forward while it runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from funnel.errors import InputError
from funnel.models import embedding_dimension, num_layers

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from funnel.training.config import TrainConfig


def layer_features(model: SentenceTransformer, features: dict[str, Tensor]) -> dict[str, Any]:
    """Run the model's transformer once and keep every layer's token embeddings.

    Returns the transformer's output features with ``all_layer_embeddings`` (a tuple of
    num_layers + 1 tensors of shape (batch, tokens, hidden); index L is the output of L layers).
    """
    transformer = model[0]
    # The stubs type a submodule's attributes as Tensor | Module; this is the Hugging Face model.
    auto_model: Any = transformer.auto_model
    config = auto_model.config
    original = config.output_hidden_states
    try:
        config.output_hidden_states = True
        output = transformer(dict(features))
    finally:
        config.output_hidden_states = original
    return output


def pool_layer(model: SentenceTransformer, transformer_output: dict[str, Any], layer: int) -> Tensor:
    """Sentence embeddings of the first ``layer`` layers, pooled by the model's own modules.

    Shape (batch, full_dim); the modules after the transformer (pooling, dense, normalize) run on
    that layer's token embeddings exactly as they run on the last layer's.
    """
    features = dict(transformer_output)
    features["token_embeddings"] = transformer_output["all_layer_embeddings"][layer]
    for module in list(model.children())[1:]:
        features = module(features)
    return features["sentence_embedding"]


def shrink(embeddings: Tensor, dim: int) -> Tensor:
    """First ``dim`` columns, L2-normalized (as MatryoshkaLoss does)."""
    return F.normalize(embeddings[..., :dim], p=2, dim=-1)


class _LayerDimForward:
    """Stands in for ``model.forward``: the transformer runs once per input column and batch;
    each later call with the same column reuses its hidden states and pools (layer, dim)."""

    def __init__(self, model: SentenceTransformer) -> None:
        self.model = model
        self.cache: list[dict[str, Any]] = []
        self.index = 0
        self.layer = self.dim = 0

    def select(self, layer: int, dim: int) -> None:
        self.layer, self.dim, self.index = layer, dim, 0

    def __call__(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.index == len(self.cache):
            self.cache.append(layer_features(self.model, features))
        transformer_output = self.cache[self.index]
        self.index += 1
        embedding = shrink(pool_layer(self.model, transformer_output, self.layer), self.dim)
        return {**features, "sentence_embedding": embedding}


class StarbucksLoss(nn.Module):
    """Sum of ``loss`` over fixed (layer, dim) pairs, every pair at every step.

    Args:
        model: a SentenceTransformer whose first module is a Transformer.
        loss: the base loss (e.g. MultipleNegativesRankingLoss(model)); it is called once per pair
            with the model's forward swapped for one that returns the (layer, dim) embedding.
        layer_dim_pairs: (layers used, dims kept), e.g. [(2, 32), (4, 64), (6, 128)]; layer counts
            from 1 (one transformer layer) to the model's depth.
        weights: one per pair; default 1 each.

    The transformer runs once per input column (with all hidden states); pooling and truncation run
    once per pair, so a step costs about one forward and one backward of the full model.
    """

    def __init__(
        self,
        model: SentenceTransformer,
        loss: nn.Module,
        layer_dim_pairs: Sequence[tuple[int, int]],
        weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        depth, width = num_layers(model), embedding_dimension(model)
        if depth == 0:
            raise InputError("Starbucks training needs a transformer model with layers (not a static model)")
        pairs = [(int(layer), int(dim)) for layer, dim in layer_dim_pairs]
        if not pairs:
            raise InputError("Starbucks training needs at least one layer:dim pair")
        bad = [p for p in pairs if not (1 <= p[0] <= depth and 1 <= p[1] <= width)]
        if bad:
            raise InputError(f"layer:dim pairs {bad} do not fit a model of {depth} layers and {width} dims")
        if weights is None:
            weights = [1.0] * len(pairs)
        if len(weights) != len(pairs):
            raise InputError(f"{len(weights)} weights for {len(pairs)} layer:dim pairs: give one weight per pair")
        self.model = model
        self.loss = loss
        self.layer_dim_pairs = tuple(pairs)
        self.weights = tuple(float(w) for w in weights)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import column_merging_disabled

        sentence_features = list(sentence_features)
        original_forward = self.model.forward
        layered = _LayerDimForward(self.model)
        self.model.forward = layered  # type: ignore[method-assign, assignment]  # swapped back below
        try:
            # Merging builds fresh column batches per call; one forward per column keeps the
            # call order (and so the hidden-state cache) the same for every pair.
            with column_merging_disabled():
                total: Tensor | float = 0.0
                for (layer, dim), weight in zip(self.layer_dim_pairs, self.weights):
                    layered.select(layer, dim)
                    total = total + weight * self.loss(sentence_features, labels)
        finally:
            self.model.forward = original_forward  # type: ignore[method-assign]
        return total  # type: ignore[return-value]

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "loss": self.loss.__class__.__name__,
            "layer_dim_pairs": [list(p) for p in self.layer_dim_pairs],
            "weights": list(self.weights),
        }


class SimilarityDistillationLoss(nn.Module):
    """Teach the model's (truncated) embeddings the in-batch similarities of a frozen teacher.

    For a batch of (anchor, positive[, negatives]) the teacher's full embeddings score every anchor
    against every text of the batch; the student's embeddings (cut to a prefix when wrapped in
    MatryoshkaLoss, or to a (layer, dim) when wrapped in StarbucksLoss) are trained to give the
    same softmax distribution (KL divergence, temperature ``temperature``). Unlike a contrastive
    loss on out-of-domain pairs, this keeps the full model's geometry (the teacher is the starting
    model) and asks each prefix to reproduce it, so nesting does not cost the full dims their quality.

    The teacher runs once per batch (no gradient); the wrapped nesting loss calls this loss once
    per dim or pair, and each call reuses that batch's teacher scores.
    """

    def __init__(self, model: SentenceTransformer, teacher: SentenceTransformer, temperature: float = 0.05) -> None:
        super().__init__()
        self.model = model
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature = temperature
        self._cached: tuple[tuple[int, ...], Tensor] | None = None

    def _teacher_scores(self, sentence_features: list[dict[str, Tensor]]) -> Tensor:
        key = tuple(f["input_ids"].data_ptr() for f in sentence_features)
        if self._cached is None or self._cached[0] != key:
            device = sentence_features[0]["input_ids"].device
            if next(self.teacher.parameters()).device != device:
                self.teacher.to(device)
            with torch.no_grad():
                embeddings = [F.normalize(self.teacher(dict(f))["sentence_embedding"], dim=-1) for f in sentence_features]
            self._cached = (key, _anchor_scores(embeddings))
        return self._cached[1]

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        sentence_features = list(sentence_features)
        target = self._teacher_scores(sentence_features)
        student = [F.normalize(self.model(f)["sentence_embedding"], dim=-1) for f in sentence_features]
        scores = _anchor_scores(student)
        return F.kl_div(
            F.log_softmax(scores / self.temperature, dim=-1),
            F.log_softmax(target / self.temperature, dim=-1),
            log_target=True,
            reduction="batchmean",
        )

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature}


class AlignAndRankLoss(nn.Module):
    """A query encoder's loss: the mean squared error to the model's query embedding (the first
    ``dim`` columns of the label, as sentence-transformers' ``MSELoss``), plus, weighted by
    ``rank_weight``, an in-batch ranking term for the texts cut from a document (the label's other
    ``dim`` columns: that document's vector as the index stores it, in the model's basis; zeros for
    a text of no document): each such text should score its own document above the batch's other
    documents (cross-entropy over cosines / ``temperature``), which is what a search asks of it."""

    def __init__(self, model: SentenceTransformer, rank_weight: float, temperature: float = 0.05) -> None:
        super().__init__()
        self.model = model
        self.rank_weight = rank_weight
        self.temperature = temperature

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        embeddings = self.model(next(iter(sentence_features)))["sentence_embedding"]
        dim = embeddings.shape[1]
        targets, documents = labels[:, :dim], labels[:, dim:]
        loss = F.mse_loss(embeddings, targets)
        has_document = documents.abs().sum(dim=1) > 0
        if self.rank_weight and int(has_document.sum()) > 1:
            scores = F.normalize(embeddings[has_document], dim=-1) @ documents[has_document].T / self.temperature
            loss = loss + self.rank_weight * F.cross_entropy(scores, torch.arange(len(scores), device=scores.device))
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {"rank_weight": self.rank_weight, "temperature": self.temperature}


def _anchor_scores(columns: list[Tensor]) -> Tensor:
    """Cosine scores of every anchor (first column) against every other text in the batch."""
    anchors, everything = columns[0], torch.cat(columns, dim=0)
    scores = anchors @ everything.T
    # An anchor against itself scores 1 for teacher and student alike: mask it out.
    self_mask = torch.zeros_like(scores, dtype=torch.bool)
    self_mask[:, : anchors.shape[0]] = torch.eye(anchors.shape[0], dtype=torch.bool, device=scores.device)
    return scores.masked_fill(self_mask, -1e4)


def build_base_loss(config: TrainConfig, model: SentenceTransformer, kind: str) -> nn.Module:
    """The base loss named in ``config.loss``; scored pairs need CoSENT and vice versa."""
    from sentence_transformers.sentence_transformer import losses

    if kind == "scored" and config.loss != "cosent":
        raise InputError(f"scored pairs (sentence1, sentence2, score) train with loss 'cosent', not {config.loss!r}")
    if kind != "scored" and config.loss == "cosent":
        raise InputError("loss 'cosent' needs scored pairs (sentence1, sentence2, score)")
    if config.loss == "mnrl":
        return losses.MultipleNegativesRankingLoss(model)
    if config.loss == "cached-mnrl":
        return losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=config.mini_batch_size)
    if config.loss == "cosent":
        return losses.CoSENTLoss(model)
    if config.loss == "distill":
        import copy

        return SimilarityDistillationLoss(model, copy.deepcopy(model), temperature=config.distill_temperature)
    from funnel.models import load_model

    return losses.GISTEmbedLoss(model, guide=load_model(config.guide_model))


def build_loss(
    config: TrainConfig,
    model: SentenceTransformer,
    kind: str,
    dims: Sequence[int],
    layer_dim_pairs: Sequence[tuple[int, int]],
) -> nn.Module:
    """Base loss wrapped in the scheme's nesting loss (dims and pairs already resolved)."""
    from sentence_transformers.sentence_transformer import losses

    base = build_base_loss(config, model, kind)
    if config.scheme == "none":
        return base
    if config.scheme == "starbucks":
        if config.loss == "cached-mnrl":
            raise InputError("Starbucks training does not combine with cached-mnrl: use mnrl")
        return StarbucksLoss(model, base, layer_dim_pairs, config.pair_weights)
    weights = list(config.dim_weights) if config.dim_weights is not None else None
    if config.scheme == "matryoshka":
        return losses.MatryoshkaLoss(model, base, list(dims), matryoshka_weights=weights)
    if config.loss == "cached-mnrl":
        raise InputError("2D Matryoshka does not combine with cached-mnrl: use mnrl")
    # 2D Matryoshka as published: one random sub-layer and one random dim per step besides the full model.
    return losses.Matryoshka2dLoss(model, base, list(dims), matryoshka_weights=weights)
