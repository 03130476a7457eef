"""Starbucks masked-autoencoder pre-training (SMAE): continued pre-training through (layer, dim) pairs.

The pre-training half of Starbucks (Zhuang et al., 2024, arXiv 2410.13230): before the (layer,
dim) fine-tune (``funnel train --scheme starbucks``), the backbone learns to fill in masked tokens
from each sub-model's representation, so the small ones start as language models of their own.
For each pair (L, d), the hidden states of layer L cut to their first d dims feed

- **masked language modelling**: the MLM head with its first weight matrix cut to d input
  columns predicts the tokens masked in the input (``mlm_probability``, BERT's 80/10/10 rule);
- **the autoencoder**: a one-layer decoder (a copy of the first transformer layer, sharing the
  embeddings and the head) sees a more heavily masked copy of the text
  (``decoder_mlm_probability``) whose first position is replaced by the sub-model's [CLS]
  (through the cut head's transform), and must restore it: the [CLS] has to carry the text.

The two losses are averaged per pair and over pairs. Logits are computed only at masked positions
(a vocabulary-wide softmax at every position would cost more than the encoder on a CPU). A
sentence-transformers checkpoint has no MLM head (all-MiniLM-L6-v2 has none), so the head starts
from the tied word embeddings and a fresh transform; the encoder's weights are written back into
the sentence-transformers folder (its pooling and normalization kept) for the Starbucks fine-tune.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from funnel.errors import InputError

if TYPE_CHECKING:
    import torch

SMAE_METADATA = "smae.json"


@dataclass(frozen=True)
class SmaeConfig:
    """One SMAE run: the corpora in ``data`` (parquet, JSONL or BEIR folders; each document's title
    and text) continue pre-training ``model`` (None: the offline all-MiniLM-L6-v2) through
    ``layer_dim_pairs`` (None: Starbucks' pairs scaled to the model), and the result is saved at
    ``output`` as a sentence-transformers folder. ``epochs`` over the texts, or ``max_minutes`` (the
    learning rate warmed up and annealed over the time)."""

    data: tuple[Path, ...]
    output: Path
    model: str | None = None
    layer_dim_pairs: tuple[tuple[int, int], ...] | None = None
    mlm_probability: float = 0.2
    decoder_mlm_probability: float = 0.4
    batch_size: int = 32
    learning_rate: float = 1e-4
    epochs: float = 1.0
    max_minutes: float | None = None
    max_seq_length: int = 128
    warmup_ratio: float = 0.05
    seed: int = 12
    show_progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", tuple(Path(p) for p in self.data))
        object.__setattr__(self, "output", Path(self.output))
        if not self.data:
            raise InputError("SMAE pre-training needs text: give corpora (parquet, JSONL or BEIR folders)")
        for name in ("mlm_probability", "decoder_mlm_probability"):
            if not 0 < getattr(self, name) < 1:
                raise InputError(f"{name} must be between 0 and 1, not {getattr(self, name)}")
        if self.batch_size < 1 or self.epochs <= 0 or (self.max_minutes is not None and self.max_minutes <= 0):
            raise InputError("batch size, epochs and minutes must be above 0")


def corpus_texts(paths: Sequence[Path]) -> list[str]:
    """Every document's ``title + " " + text`` of the corpora, in order."""
    from funnel.corpus import open_corpus
    from funnel.readers import document_text

    texts: list[str] = []
    for path in paths:
        for batch in open_corpus(path, skip_invalid=True).batches():  # an empty document teaches nothing: skipped
            columns = batch.to_pydict()
            texts += [document_text(title, text) for title, text in zip(columns["title"], columns["text"])]
    return texts


class SmaeModel:
    """The encoder with its MLM head and the one-layer autoencoder decoder; :meth:`loss` is SMAE's."""

    def __init__(self, path: Path, pairs: Sequence[tuple[int, int]]) -> None:
        import torch
        from transformers import BertForMaskedLM
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the checkpoint has no MLM head: its fresh weights are expected
        try:
            self.mlm = BertForMaskedLM.from_pretrained(str(path))
        finally:
            hf_logging.set_verbosity(verbosity)
        self.decoder = copy.deepcopy(self.mlm.bert.encoder.layer[0])
        self.pairs = list(pairs)
        self.vocabulary = int(self.mlm.config.vocab_size)
        self.parameters = [*self.mlm.parameters(), *self.decoder.parameters()]
        self._loss = torch.nn.CrossEntropyLoss()

    def train(self) -> None:
        self.mlm.train()
        self.decoder.train()

    def _transform(self, hidden: torch.Tensor) -> torch.Tensor:
        """The head's transform on the first ``hidden.shape[-1]`` dims: its dense layer's weight cut to those columns."""
        import torch.nn.functional as F

        transform = self.mlm.cls.predictions.transform
        out = F.linear(hidden, transform.dense.weight[:, : hidden.shape[-1]], transform.dense.bias)
        return transform.LayerNorm(transform.transform_act_fn(out))

    def _token_loss(self, transformed: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        keep = labels != -100
        return self._loss(self.mlm.cls.predictions.decoder(transformed[keep]), labels[keep])

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        import torch

        mask = batch["attention_mask"]
        hidden = self.mlm.bert(input_ids=batch["input_ids"], attention_mask=mask, output_hidden_states=True).hidden_states
        decoder_embeddings = self.mlm.bert.embeddings(input_ids=batch["decoder_input_ids"])
        additive = (1.0 - mask[:, None, None, :].to(decoder_embeddings.dtype)) * torch.finfo(decoder_embeddings.dtype).min
        total = decoder_embeddings.new_zeros(())
        for layer, dim in self.pairs:
            transformed = self._transform(hidden[layer][:, :, :dim])
            mlm = self._token_loss(transformed, batch["labels"])
            restored = torch.cat([transformed[:, :1], decoder_embeddings[:, 1:]], dim=1)
            decoded = self.decoder(restored, attention_mask=additive)
            decoded = decoded[0] if isinstance(decoded, tuple) else decoded
            mae = self._token_loss(self.mlm.cls.predictions.transform(decoded), batch["decoder_labels"])
            total = total + (mlm + mae) / 2
        return total / len(self.pairs)


def _batches(tokenized: list[list[int]], config: SmaeConfig, tokenizer: Any, rng: random.Random) -> Iterator[dict[str, Any]]:
    """Shuffled batches, each masked twice: lightly for the encoder, heavily for the decoder."""
    from transformers import DataCollatorForLanguageModeling

    encoder_masking = DataCollatorForLanguageModeling(tokenizer, mlm_probability=config.mlm_probability, return_tensors="pt")
    decoder_masking = DataCollatorForLanguageModeling(tokenizer, mlm_probability=config.decoder_mlm_probability, return_tensors="pt")
    order = list(range(len(tokenized)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
            rows = [{"input_ids": tokenized[i]} for i in order[start : start + config.batch_size]]
            padded = tokenizer.pad(rows, return_tensors="pt")
            special = (padded["input_ids"].unsqueeze(-1) == padded["input_ids"].new_tensor(tokenizer.all_special_ids)).any(-1)
            inputs, labels = encoder_masking.torch_mask_tokens(padded["input_ids"].clone(), special_tokens_mask=special)
            decoder_inputs, decoder_labels = decoder_masking.torch_mask_tokens(padded["input_ids"].clone(), special_tokens_mask=special)
            yield {
                "input_ids": inputs,
                "labels": labels,
                "decoder_input_ids": decoder_inputs,
                "decoder_labels": decoder_labels,
                "attention_mask": padded["attention_mask"],
            }


def pretrain_smae(config: SmaeConfig) -> Path:
    """Run SMAE as ``config`` says; returns the saved sentence-transformers folder (``config.output``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import set_seed

    from funnel.models import embedding_dimension, load_model, num_layers, resolve_model
    from funnel.training.config import scaled_starbucks_pairs

    if config.output.exists():
        raise InputError(f"{config.output} exists: choose a new output folder")
    texts = corpus_texts(config.data)
    if len(texts) < config.batch_size:
        raise InputError(f"{len(texts)} documents are fewer than one batch of {config.batch_size}: give more text or a smaller batch")
    path = resolve_model(config.model)
    model = load_model(path)
    depth, width = num_layers(model), embedding_dimension(model)
    pairs = list(config.layer_dim_pairs or scaled_starbucks_pairs(depth, width))
    for layer, dim in pairs:
        if not (1 <= layer <= depth and 1 <= dim <= width):
            raise InputError(f"pair {layer}:{dim} is outside the model ({depth} layers, {width} dims)")
    set_seed(config.seed)
    tokenizer = model.tokenizer
    tokenized = tokenizer(texts, truncation=True, max_length=config.max_seq_length)["input_ids"]
    smae = SmaeModel(path, pairs)
    smae.train()
    optimizer = torch.optim.AdamW(smae.parameters, lr=config.learning_rate, weight_decay=0.001)
    steps = max(1, math.floor(config.epochs * (len(tokenized) // config.batch_size)))
    started, log, step = time.monotonic(), [], 0
    batches = _batches(tokenized, config, tokenizer, random.Random(config.seed))
    progress = _progress(steps, config)
    while step < steps:
        done = (time.monotonic() - started) / (60 * config.max_minutes) if config.max_minutes else step / steps
        if done >= 1:
            break
        warm = min(1.0, done / config.warmup_ratio) if config.warmup_ratio > 0 else 1.0
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * warm * max(0.0, 1.0 - done)
        loss = smae.loss(next(batches))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(smae.parameters, 1.0)
        optimizer.step()
        step += 1
        if step % 20 == 0:
            log.append({"step": step, "loss": round(loss.item(), 4)})
        progress(step, loss.item())
    backbone: Any = model[0].auto_model
    missing = [key for key in backbone.load_state_dict(smae.mlm.bert.state_dict(), strict=False).missing_keys if "pooler" not in key]
    if missing:  # the encoder must come back whole; only the pooler (unused by sentence-transformers) may differ
        raise RuntimeError(f"the pre-trained encoder does not fit the model's: {missing[:3]}")
    metadata = {
        "pretraining": "smae",
        "base_model": str(path),
        "layer_dim_pairs": [list(pair) for pair in pairs],
        "documents": len(texts),
        "trained_on": [str(p) for p in config.data],
        "steps": step,
        "train_seconds": round(time.monotonic() - started, 1),
        "mlm_probability": config.mlm_probability,
        "decoder_mlm_probability": config.decoder_mlm_probability,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "seed": config.seed,
        "loss_log": log,
    }
    _save(model, metadata, config.output)
    return config.output


def _progress(steps: int, config: SmaeConfig) -> Any:
    if not config.show_progress:
        return lambda step, loss: None
    from tqdm import tqdm

    bar = tqdm(total=steps, desc="SMAE", unit="step")

    def update(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    return update


def _save(model: Any, metadata: dict[str, Any], output: Path) -> None:
    """The model beside ``output``, then renamed into place: a folder there is whole."""
    staging = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    model.save(str(staging))
    (staging / SMAE_METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
    os.replace(staging, output)
