"""A tiny freshly initialized BERT (2 layers, 64 dims, MiniLM tokenizer, mean pooling) and 64 real pairs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TRAIN_DATA = Path(__file__).resolve().parents[1] / "data" / "train"  # in-repo slices of the real pairs


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """A 2-layer, 64-dim BERT with random weights, saved as a sentence-transformers folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from funnel.models import default_model_path

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder / "hf")
    tokenizer.save_pretrained(folder / "hf")
    transformer = Transformer(str(folder / "hf"), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(64, pooling_mode="mean")], device="cpu")
    model.save(str(folder / "model"))
    return folder / "model"


@pytest.fixture(scope="session")
def debian_pairs(tmp_path_factory) -> Path:
    """The first 64 real Debian summary -> description pairs."""
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    with (TRAIN_DATA / "debian-pairs.jsonl").open() as source, path.open("w") as out:
        for _, line in zip(range(64), source):
            out.write(line)
    return path


@pytest.fixture(scope="session")
def stsb_pairs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "stsb.jsonl"
    with (TRAIN_DATA / "stsb-train.jsonl").open() as source, path.open("w") as out:
        for _, line in zip(range(64), source):
            out.write(line)
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open()]


@pytest.fixture
def tiny_model(tiny_model_path):
    """A fresh copy of the tiny model for each test (tests may train or swap its forward)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_model_path), device="cpu")
