import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from funnel.errors import InputError
from funnel.vectors import normalize, truncate

finite = st.floats(-10, 10, allow_nan=False, width=32)


@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(2, 48)), elements=finite), st.data())
def test_truncate_keeps_the_prefix_direction_with_unit_norm(vectors, data):
    dim = data.draw(st.integers(1, vectors.shape[1]))
    out = truncate(vectors, dim)
    assert out.shape == (vectors.shape[0], dim)
    norms = np.linalg.norm(vectors[:, :dim], axis=1)
    for row, source, norm in zip(out, vectors[:, :dim], norms):
        if norm > 1e-6:
            assert np.linalg.norm(row) == pytest.approx(1.0, abs=1e-5)
            np.testing.assert_allclose(row * norm, source, rtol=1e-4, atol=1e-5)
        elif norm == 0:
            assert not row.any()


def test_truncating_to_full_dims_is_normalizing():
    vectors = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    np.testing.assert_allclose(truncate(vectors, 16), normalize(vectors))
    np.testing.assert_allclose(np.linalg.norm(normalize(vectors), axis=1), 1.0, rtol=1e-6)


def test_a_zero_prefix_stays_zero_instead_of_nan():
    vectors = np.array([[0.0, 0.0, 3.0, 4.0]], dtype=np.float32)
    assert not np.isnan(truncate(vectors, 2)).any()
    np.testing.assert_allclose(truncate(vectors, 4), [[0, 0, 0.6, 0.8]])


@pytest.mark.parametrize("dim", [0, 5, -1])
def test_truncating_outside_the_vector_is_refused(dim):
    with pytest.raises(InputError, match=r"cannot truncate 4-dim vectors to .* dims: choose 1\.\.4"):
        truncate(np.ones((2, 4), dtype=np.float32), dim)


def test_encoder_output_truncates_like_the_model_truncate_dim(encoder):
    """funnel's truncation equals sentence-transformers' own truncate_dim + normalization."""
    texts = ["supersonic flow over a wedge", "boundary layer transition"]
    ours = truncate(encoder.encode(texts), 64)
    theirs = encoder.model.encode(texts, truncate_dim=64, normalize_embeddings=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
