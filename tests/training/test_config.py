from pathlib import Path

import pytest

from funnel.errors import InputError
from funnel.training.config import STARBUCKS_REFERENCE, TrainConfig, default_dims, scaled_starbucks_pairs


def make(**changes) -> TrainConfig:
    return TrainConfig(**{"data": (Path("pairs.jsonl"),), "output": Path("out"), **changes})


def test_default_dims_are_powers_of_two_below_full():
    assert default_dims(384) == (384, 256, 128, 64, 32)
    assert default_dims(768) == (768, 512, 256, 128, 64, 32)
    assert default_dims(64, smallest=16) == (64, 32, 16)


def test_starbucks_pairs_scale_to_the_model():
    assert scaled_starbucks_pairs(12, 768) == STARBUCKS_REFERENCE
    assert scaled_starbucks_pairs(6, 384) == ((1, 16), (2, 32), (3, 64), (4, 128), (5, 256), (6, 384))
    assert scaled_starbucks_pairs(2, 64)[-1] == (2, 64)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"data": ()}, "no training data"),
        ({"scheme": "russian-doll"}, "unknown scheme 'russian-doll'"),
        ({"loss": "triplet"}, "unknown loss 'triplet'"),
        ({"static": "distill", "scheme": "starbucks"}, "static model has no layers"),
        ({"loss": "gist"}, "needs a guide model"),
        ({"dims": (64, 32), "dim_weights": (1.0,)}, "1 dim weights for 2 dims"),
        ({"dim_weights": (1.0,)}, "dim_weights given without dims"),
        ({"dims": (64, 0)}, "dims must be positive"),
        ({"layer_dim_pairs": ((0, 32),)}, "pairs must be positive"),
        ({"layer_dim_pairs": ((1, 32),), "pair_weights": (1.0, 2.0)}, "2 pair weights for 1 layer:dim pairs"),
        ({"remine_every": 10}, "remine_every needs mined negatives"),
        ({"remine_factor": 0.9}, "remine_factor must be >= 1"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"learning_rate": 0.0}, "learning_rate must be positive"),
    ],
)
def test_bad_config_says_what_is_wrong(changes, message):
    with pytest.raises(InputError, match=message):
        make(**changes)
