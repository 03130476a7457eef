"""Each scheme trains a few steps on 64 real Debian pairs with a tiny random BERT: the loss falls and
the saved model reloads with funnel's metadata."""

import numpy as np
import pytest

from funnel.errors import InputError
from funnel.models import Encoder, read_model_metadata
from funnel.training import TrainConfig, train

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


def test_cached_mnrl_and_gist_run(tmp_path, tiny_model_path, debian_pairs):
    quick = {**FAST, "max_steps": 2}
    train(
        TrainConfig(
            data=(debian_pairs,),
            output=tmp_path / "cached",
            model=str(tiny_model_path),
            loss="cached-mnrl",
            mini_batch_size=4,
            dims=(64, 32),
            **quick,
        )
    )
    folder = train(
        TrainConfig(
            data=(debian_pairs,),
            output=tmp_path / "gist",
            model=str(tiny_model_path),
            loss="gist",
            guide_model=str(tiny_model_path),
            dims=(64, 32),
            **quick,
        )
    )
    assert read_model_metadata(folder)["base_loss"] == "gist"


def test_hard_negatives_with_conan_remining(tmp_path, tiny_model_path, debian_pairs):
    folder = train(
        TrainConfig(
            data=(debian_pairs,),
            output=tmp_path / "mined",
            model=str(tiny_model_path),
            dims=(64, 32),
            hard_negatives=1,
            mining_margin=None,
            remine_every=2,
            remine_floor=1.0,
            **{**FAST, "max_steps": 4, "batch_size": 4},
        )
    )
    assert read_model_metadata(folder)["steps"] == 4


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
