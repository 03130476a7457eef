"""SMAE pre-training: masked language modelling and the [CLS] autoencoder through (layer, dim)
pairs, on a tiny BERT and real Cranfield abstracts; the result is a model `funnel train` fine-tunes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from funnel.cli.train import register
from funnel.errors import InputError
from funnel.training.smae import SmaeConfig, SmaeModel, corpus_texts, pretrain_smae

CORPUS = Path(__file__).resolve().parents[1] / "data" / "cranfield" / "corpus.jsonl"
PAIRS = ((1, 16), (2, 64))


def app() -> typer.Typer:
    application = typer.Typer()
    register(application)
    application.command("noop")(lambda: None)
    return application


def masked_batch(model: SmaeModel, texts: list[str], tokenizer) -> dict[str, torch.Tensor]:
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    ids = encoded["input_ids"]
    labels = torch.full_like(ids, -100)
    labels[:, 2:5] = ids[:, 2:5]  # three masked tokens a text, the same every step
    masked = ids.clone()
    masked[:, 2:5] = tokenizer.mask_token_id
    return {
        "input_ids": masked,
        "labels": labels,
        "decoder_input_ids": masked,
        "decoder_labels": labels,
        "attention_mask": encoded["attention_mask"],
    }


def test_the_head_of_a_pair_reads_only_its_first_dims(tiny_model_path):
    model = SmaeModel(tiny_model_path, PAIRS)
    hidden = torch.randn(2, 5, 64)
    cut = model._transform(hidden[:, :, :16])
    zeroed = hidden.clone()
    zeroed[:, :, 16:] = 0
    torch.testing.assert_close(cut, model._transform(zeroed))  # the full head on the first 16 dims alone
    assert not torch.allclose(cut, model._transform(hidden)), "the other dims would have changed it"


def test_every_pair_learns_to_fill_in_masked_tokens(tiny_model_path):
    torch.manual_seed(0)
    model = SmaeModel(tiny_model_path, PAIRS)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_path))
    batch = masked_batch(model, corpus_texts([CORPUS])[:8], tokenizer)
    optimizer = torch.optim.AdamW(model.parameters, lr=2e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < losses[0] - 1.0 and losses == sorted(losses, reverse=True)


def test_smae_saves_a_model_that_the_starbucks_fine_tune_starts_from(tmp_path, tiny_model_path, debian_pairs):
    from funnel.models import load_model

    output = tmp_path / "smae"
    pretrain_smae(SmaeConfig(data=(CORPUS,), output=output, model=str(tiny_model_path), layer_dim_pairs=PAIRS, batch_size=8,
                             epochs=0.05, max_seq_length=32, show_progress=False))  # fmt: skip
    import json

    meta = json.loads((output / "smae.json").read_text())
    assert meta["steps"] == 2 and meta["layer_dim_pairs"] == [[1, 16], [2, 64]] and meta["documents"] == 353  # two empty abstracts skipped
    before, after = load_model(tiny_model_path), load_model(output)
    texts = ["boundary layer transition", "supersonic flow over a wedge"]
    assert not np.allclose(before.encode(texts), after.encode(texts)), "the encoder's weights moved"
    result = CliRunner().invoke(
        app(),
        ["train", str(debian_pairs), "-o", str(tmp_path / "fine"), "--model", str(output), "--scheme", "starbucks", "--pairs", "1:16,2:64",
         "--max-steps", "1", "--batch-size", "16", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def test_the_cli_runs_smae_and_says_what_comes_next(tmp_path, tiny_model_path):
    result = CliRunner().invoke(
        app(),
        ["train", str(CORPUS), "--pretrain", "smae", "-o", str(tmp_path / "m"), "--model", str(tiny_model_path), "--pairs", "1:16,2:64",
         "--batch-size", "8", "--epochs", "0.05", "--max-seq-length", "32", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "SMAE through [[1, 16], [2, 64]], 2 steps on 353 documents" in result.output and "--scheme starbucks" in result.output


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"layer_dim_pairs": ((3, 16),)}, "pair 3:16 is outside the model"),
        ({"mlm_probability": 1.5}, "mlm_probability must be between 0 and 1"),
        ({"batch_size": 500}, "fewer than one batch of 500"),
    ],
)
def test_bad_smae_runs_fail_before_training(tmp_path, tiny_model_path, changes, message):
    settings = {"data": (CORPUS,), "output": tmp_path / "m", "model": str(tiny_model_path), "show_progress": False} | changes
    with pytest.raises(InputError, match=message):
        pretrain_smae(SmaeConfig(**settings))
    assert not (tmp_path / "m").exists()


def test_an_unknown_pretraining_objective_is_refused(tmp_path):
    result = CliRunner().invoke(app(), ["train", str(CORPUS), "--pretrain", "bert", "-o", str(tmp_path / "m")])
    assert isinstance(result.exception, InputError) and "choose smae" in str(result.exception)
