import copy

import numpy as np
import pytest
import torch

from funnel.errors import InputError
from funnel.layers import LayeredEncoder

TEXTS = [
    "experimental investigation of the aerodynamics of a wing in a slipstream",
    "boundary layer",
    "what similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft",
]


@pytest.fixture(scope="module")
def layered(encoder):
    return LayeredEncoder(encoder)


def test_all_layers_equal_the_models_own_encode(layered, encoder):
    assert layered.num_layers == 6
    np.testing.assert_allclose(layered.encode(TEXTS, 6), encoder.encode(TEXTS), atol=1e-5)


def test_continuing_from_a_shallow_layer_equals_a_full_encode(layered, encoder):
    shallow = layered.advance(layered.start(TEXTS), 2)
    deep = layered.advance(shallow, 6)
    np.testing.assert_allclose(layered.embed(deep), encoder.encode(TEXTS), atol=1e-5)
    assert (shallow.layers_run, deep.layers_run) == (2, 6), "continuation runs only the 4 missing layers"
    np.testing.assert_allclose(layered.embed(shallow), layered.encode(TEXTS, 2), atol=1e-5)


def test_shallow_encode_equals_a_model_cut_to_its_first_layers(layered, encoder):
    """Independent check: a copy of the model with the layer list cut to 3 layers."""
    cut = copy.deepcopy(encoder.model)
    cut[0].auto_model.encoder.layer = torch.nn.ModuleList(list(cut[0].auto_model.encoder.layer)[:3])
    expected = cut.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(layered.encode(TEXTS, 3), expected, atol=1e-5)


def test_one_pass_gives_every_requested_layer(layered):
    both = layered.encode_layers(TEXTS, [4, 1], batch_size=2)
    np.testing.assert_allclose(both[1], layered.encode(TEXTS, 1), atol=1e-5)
    np.testing.assert_allclose(both[4], layered.encode(TEXTS, 4), atol=1e-5)
    # Shallow embeddings differ from deep ones: the layers do something.
    assert np.abs(both[1] - both[4]).max() > 0.05


@pytest.mark.parametrize("layer", [0, 7])
def test_layers_outside_the_model(layered, layer):
    with pytest.raises(InputError, match=r"layer .* does not exist: this model has layers 1\.\.6"):
        layered.encode(TEXTS, layer)


def test_no_going_back(layered):
    states = layered.advance(layered.start(TEXTS[:1]), 3)
    with pytest.raises(InputError, match=r"cannot go back from layer 3 to layer 2"):
        layered.advance(states, 2)
