"""Each scheme trains a few steps on 64 real Debian pairs with a tiny random BERT: the loss falls and
the saved model reloads with funnel's metadata."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from funnel.errors import InputError
from funnel.models import Encoder, default_model_path, read_model_metadata
from funnel.training import TrainConfig, train
from funnel.training.data import PAIR_KIND
from funnel.training.losses import build_loss

TRAIN_DATA = Path(__file__).resolve().parents[1] / "data" / "train"

FAST = {"batch_size": 16, "learning_rate": 1e-3, "max_steps": 12, "show_progress": False, "extra": {"log_every": 1}}


def losses_of(folder):
    return [entry["loss"] for entry in read_model_metadata(folder)["loss_log"]]


def assert_loss_falls(folder):
    losses = losses_of(folder)
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


@pytest.mark.parametrize(
    ("scheme", "expected_pairs"),
    [
        ("matryoshka", [[2, 16], [2, 32], [2, 64]]),
        ("2d", [[1, 16], [1, 32], [1, 64], [2, 16], [2, 32], [2, 64]]),
        ("starbucks", [[1, 16], [2, 32], [2, 64]]),
    ],
)
def test_each_scheme_learns_and_reloads(tmp_path, tiny_model_path, debian_pairs, scheme, expected_pairs):
    pairs = ((1, 16), (2, 32), (2, 64)) if scheme == "starbucks" else None
    folder = train(
        TrainConfig(
            data=(debian_pairs,),
            output=tmp_path / scheme,
            model=str(tiny_model_path),
            scheme=scheme,
            dims=(64, 32, 16),
            layer_dim_pairs=pairs,
            **FAST,
        )
    )
    assert_loss_falls(folder)
    meta = read_model_metadata(folder)
    assert meta["scheme"] == scheme and meta["nested_dims"] == [64, 32, 16]
    assert meta["layer_dim_pairs"] == expected_pairs and meta["steps"] == 12
    assert meta["base_model"] == str(tiny_model_path) and meta["train_seconds"] > 0
    encoder = Encoder.load(folder)
    assert encoder.metadata == meta and encoder.encode(["a text viewer"]).shape == (1, 64)
    assert not (tmp_path / f"{scheme}.checkpoints").exists()


def test_distillation_teaches_prefixes_the_full_similarities(tmp_path, tiny_model_path, debian_pairs):
    folder = train(
        TrainConfig(
            data=(debian_pairs,),
            output=tmp_path / "distill",
            model=str(tiny_model_path),
            scheme="matryoshka",
            dims=(64, 16),
            loss="distill",
            **FAST,
        )
    )
    assert_loss_falls(folder)
    assert read_model_metadata(folder)["base_loss"] == "distill"


def test_static_model_from_tokenizer(tmp_path, debian_pairs):
    folder = train(
        TrainConfig(
            data=(debian_pairs,),
            output=tmp_path / "static",
            static="tokenizer",
            static_dim=64,
            dims=(64, 32),
            batch_size=32,
            learning_rate=0.2,
            max_steps=12,
            show_progress=False,
            extra={"log_every": 1},
        )
    )
    assert_loss_falls(folder)
    meta = read_model_metadata(folder)
    assert meta["scheme"] == "static-matryoshka" and meta["nested_dims"] == [64, 32] and meta["layer_dim_pairs"] == []
    assert Encoder.load(folder).encode(["zip files"]).shape == (1, 64)


def test_static_model_distilled_with_model2vec(tmp_path, tiny_model_path, debian_pairs):
    folder = train(
        TrainConfig(
            data=(debian_pairs,),
            output=tmp_path / "distilled",
            model=str(tiny_model_path),
            static="distill",
            static_dim=32,
            dims=(32, 16),
            batch_size=32,
            learning_rate=0.05,
            max_steps=2,
            show_progress=False,
        )
    )
    assert read_model_metadata(folder)["base_model"].startswith("model2vec distillation of")
    assert Encoder.load(folder).encode(["zip files"]).shape == (1, 32)


def test_cosent_on_scored_pairs(tmp_path, tiny_model_path, stsb_pairs):
    folder = train(
        TrainConfig(data=(stsb_pairs,), output=tmp_path / "cosent", model=str(tiny_model_path), loss="cosent", dims=(64, 32), **FAST)
    )
    assert_loss_falls(folder)


def pair_features(model, rows):
    """Tokenized (anchor, positive) columns of the given rows of the Debian pairs, as a batch."""
    pairs = [json.loads(line) for line in (TRAIN_DATA / "debian-pairs.jsonl").open()]
    return [model.preprocess([pairs[r][column] for r in rows]) for column in ("query", "positive")]


def loss_and_gradients(loss, model, features):
    """The loss on one batch and every parameter's gradient, with the rows per transformer call."""
    rows_per_call = []
    hook = model[0].register_forward_hook(lambda module, args, output: rows_per_call.append(len(output["token_embeddings"])))
    try:
        model.zero_grad()
        value = loss(features, None)
        value.backward()
    finally:
        hook.remove()
    gradients = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]
    return value.item(), gradients, rows_per_call


def test_cached_mnrl_is_mnrl_computed_in_mini_batches(tiny_model):
    """Gradient caching changes memory, not maths: the same loss and gradients as MNRL, with the
    transformer never running on more than mini_batch_size rows at once."""

    def matryoshka(loss):
        config = TrainConfig(data=("x",), output="y", loss=loss, mini_batch_size=4, dims=(64, 32))
        return build_loss(config, tiny_model, PAIR_KIND, [64, 32], [])

    tiny_model.eval()  # no dropout: both losses see the same network
    features = pair_features(tiny_model, range(12))
    plain = loss_and_gradients(matryoshka("mnrl"), tiny_model, features)
    cached = loss_and_gradients(matryoshka("cached-mnrl"), tiny_model, features)
    assert cached[0] == pytest.approx(plain[0], rel=1e-5)
    for cached_grad, plain_grad in zip(cached[1], plain[1]):
        torch.testing.assert_close(cached_grad, plain_grad, rtol=1e-4, atol=1e-5)
    assert max(plain[2]) == 12 and max(cached[2]) == 4, (plain[2], cached[2])


def test_cached_mnrl_training_learns(tmp_path, tiny_model_path, debian_pairs):
    config = TrainConfig(
        data=(debian_pairs,),
        output=tmp_path / "cached",
        model=str(tiny_model_path),
        loss="cached-mnrl",
        mini_batch_size=4,
        dims=(64, 32),
        **FAST,
    )
    folder = train(config)
    assert_loss_falls(folder)
    assert read_model_metadata(folder)["base_loss"] == "cached-mnrl"


def test_gist_drops_the_in_batch_negatives_its_guide_calls_false(tiny_model, tiny_model_path):
    """With MiniLM as guide, rows 3, 6, 7 and 13 of the Debian pairs hold no false negative (every
    in-batch text scores below the row's own positive): GIST is then exactly MNRL at temperature
    0.01 that also contrasts anchors with anchors and positives with positives. Rows 4 and 5 are
    two 2048 puzzle games, each the other's false negative: GIST drops them, so its loss is lower."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    def gist(guide):
        return build_loss(
            TrainConfig(data=("x",), output="y", loss="gist", guide_model=str(guide), scheme="none"), tiny_model, PAIR_KIND, [64], []
        )

    def on(loss, rows):
        with torch.no_grad():
            return loss(pair_features(tiny_model, rows), None).item()

    tiny_model.eval()
    guided = gist(default_model_path())
    unguided = MultipleNegativesRankingLoss(tiny_model, scale=100.0, directions=("query_to_doc", "query_to_query", "doc_to_doc"))
    clean, with_duplicates = [3, 6, 7, 13], [3, 6, 7, 13, 4, 5]
    assert on(guided, clean) == pytest.approx(on(unguided, clean), rel=1e-5)
    assert on(guided, with_duplicates) < on(unguided, with_duplicates) - 0.05
    # The guide decides: the random tiny model as its own guide calls many texts false negatives.
    assert on(gist(tiny_model_path), clean) < on(unguided, clean) - 1.0


def test_gist_training_learns(tmp_path, tiny_model_path, debian_pairs):
    config = TrainConfig(
        data=(debian_pairs,),
        output=tmp_path / "gist",
        model=str(tiny_model_path),
        loss="gist",
        guide_model=str(tiny_model_path),  # MiniLM guides better (see above) but makes this run several times slower
        dims=(64, 32),
        **FAST,
    )
    folder = train(config)
    assert_loss_falls(folder)
    assert read_model_metadata(folder)["base_loss"] == "gist"


def test_conan_remining_replaces_negatives_every_n_steps_and_training_reads_them(tmp_path, tiny_model_path, debian_pairs, monkeypatch):
    """Re-mining every 2 of 5 steps: the pool is refreshed after steps 2 and 4, the negatives that
    training made easy are replaced, and later batches train on the replacements."""
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

    import funnel.training.mining as mining

    seen = {}
    remining_callback = mining.remining_callback

    def record_pool(pool, model, config):  # the real callback, kept to read its record afterwards
        seen["pool"], seen["mined"] = pool, pool.negatives.copy()
        seen["callback"] = remining_callback(pool, model, config)
        return seen["callback"]

    monkeypatch.setattr(mining, "remining_callback", record_pool)
    batches = []  # what each training batch held, as the data loader handed it to the collator
    collate = SentenceTransformerDataCollator.__call__
    monkeypatch.setattr(SentenceTransformerDataCollator, "__call__", lambda self, rows: batches.append(rows) or collate(self, rows))
    # lr 1e-2 moves the random model far enough in two steps that Conan's rule (score * 1.15 < mined score) fires.
    train(
        TrainConfig(
            data=(debian_pairs,),
            output=tmp_path / "mined",
            model=str(tiny_model_path),
            dims=(64, 32),
            hard_negatives=1,
            mining_margin=None,
            remine_every=2,
            remine_floor=1.0,
            **{**FAST, "max_steps": 5, "batch_size": 4, "learning_rate": 1e-2},
        )
    )
    pool, mined, history = seen["pool"], seen["mined"], seen["callback"].history
    assert [step for step, _ in history] == [2, 4]
    assert history[0][1] > 0 and pool.replaced == sum(count for _, count in history)
    assert 0 < (pool.negatives != mined).sum() <= pool.replaced
    row_of = {(anchor, positive): row for row, (anchor, positive) in enumerate(zip(pool.anchors, pool.positives))}
    read = [[(row_of[r["anchor"], r["positive"]], r["negative_1"]) for r in batch] for batch in batches]
    assert len(read) >= 5 and all(len(batch) == 4 for batch in read)
    assert all(negative == mined[row, 0] for batch in read[:2] for row, negative in batch), "steps 1-2 train on the mined negatives"
    # The loader reads one batch ahead (step 3's before the refresh after step 2), so look from batch 3 on.
    remined = [(row, negative) for batch in read[2:] for row, negative in batch if negative != mined[row, 0]]
    assert remined, "no batch after a re-mining trained on a replaced negative"
    assert all(pool.positives[row] not in pool.negatives[row] for row in range(len(pool.anchors)))


def test_resume_after_interruption(tmp_path, tiny_model_path, debian_pairs, monkeypatch):
    import funnel.training.trainer as trainer

    config = dict(
        data=(debian_pairs,),
        output=tmp_path / "resumed",
        model=str(tiny_model_path),
        dims=(64, 32),
        checkpoint_every=2,
        **{**FAST, "max_steps": 4},
    )

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_save", crash)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**config))
    assert trainer.latest_checkpoint(tmp_path / "resumed").name == "checkpoint-4"
    monkeypatch.undo()
    folder = train(TrainConfig(**{**config, "max_steps": 6, "resume": True}))
    meta = read_model_metadata(folder)
    assert meta["steps"] == 6 and meta["loss_log"][0]["step"] == 5  # steps 1-4 came from the checkpoint
    assert not trainer.checkpoint_dir(folder).exists()


def test_bad_runs_fail_before_training(tmp_path, tiny_model_path, debian_pairs, stsb_pairs):
    with pytest.raises(InputError, match="nothing to resume"):
        train(TrainConfig(data=(debian_pairs,), output=tmp_path / "new", model=str(tiny_model_path), resume=True))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="exists and is not a funnel-trained model"):
        train(TrainConfig(data=(debian_pairs,), output=tmp_path / "taken", model=str(tiny_model_path)))
    with pytest.raises(InputError, match="scored pairs .* train with loss 'cosent', not 'mnrl'"):
        train(TrainConfig(data=(stsb_pairs,), output=tmp_path / "x", model=str(tiny_model_path)))
    with pytest.raises(InputError, match=r"dims \[128, 64\] exceed the model's 64 dims"):
        train(TrainConfig(data=(debian_pairs,), output=tmp_path / "x", model=str(tiny_model_path), dims=(128, 64)))
