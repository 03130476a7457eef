"""The index's rotation: fitted at build time, stored checksummed, applied to every query; full-dim
scores never change, updates keep it, ``auto`` keeps a nesting model's order, old indexes load."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import SAMPLE, documents, vector_index
from typer.testing import CliRunner

from funnel.cli import app
from funnel.corpus import document_text
from funnel.errors import IndexFormatError
from funnel.indexes.builder import IndexConfig
from funnel.indexes.index import Index
from funnel.indexes.manifest import FORMAT_VERSION
from funnel.indexes.shortlist import make_spec
from funnel.indexes.updates import add_documents, compact_index, delete_documents
from funnel.indexes.verify import verify_index
from funnel.search.exact import exact_search
from funnel.search.plan import Plan
from funnel.search.run import run_funnel
from funnel.vectors import normalize, truncate

SHORTLISTS = (make_spec(32), make_spec(64))


@pytest.fixture(scope="module")
def sample_vectors(encoder) -> np.ndarray:
    """The 300 real Debian descriptions of the in-repo sample, encoded once (model order)."""
    table = pq.read_table(SAMPLE)
    texts = [document_text(None, text) for text in table.column("text").to_pylist()]
    return encoder.encode(texts)


@pytest.fixture(scope="module")
def queries(encoder) -> np.ndarray:
    return encoder.encode(["image viewer", "compress files", "python web framework", "font rendering", "network monitor"])


@pytest.fixture(scope="module")
def indexes(tmp_path_factory, sample_vectors):
    root = tmp_path_factory.mktemp("rotation")
    built = {}
    for name in ("none", "pca", "auto"):
        config = IndexConfig(shortlists=SHORTLISTS, vector_dtype="float32", rotation=name)
        built[name] = Index.load(vector_index(root / name, sample_vectors, config))
    return built


def test_full_dim_scores_are_the_same_with_and_without_rotation(indexes, queries, sample_vectors):
    plain, rotated = indexes["none"], indexes["pca"]
    assert plain.rotation() is None and rotated.rotation() is not None
    # The stored vectors really are rotated (so the prefixes differ), yet every full-dim score is the model's.
    assert np.abs(rotated.vectors(np.arange(5)) - sample_vectors[:5]).max() > 0.05
    for index in (plain, rotated):
        scores, positions = exact_search(index, queries, 20)
        expected = np.sort(queries @ sample_vectors.T, axis=1)[:, ::-1][:, :20]
        np.testing.assert_allclose(scores, expected, atol=1e-5)
        np.testing.assert_allclose(np.take_along_axis(queries @ sample_vectors.T, positions, axis=1), scores, atol=1e-5)
        funnel = run_funnel(index, queries, Plan.parse(f"64:{index.count},full:20"), 20)
        np.testing.assert_allclose(funnel.scores, scores, atol=1e-5)
        np.testing.assert_array_equal(funnel.positions, positions)


def test_the_rotation_moves_information_into_the_first_dims(indexes, sample_vectors):
    rotated = indexes["pca"]

    def energy(v: np.ndarray) -> float:
        return float((v[:, :32] ** 2).sum() / (v**2).sum())

    assert energy(rotated.all_vectors()) > energy(sample_vectors) + 0.1
    decision = rotated.manifest.rotation.decision["full"]
    assert decision["energy_rotated"]["32"] > decision["energy_model_order"]["32"]
    rotation = rotated.rotation()
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(384), atol=1e-5)
    # Queries go through the same matrix: a document's own vector scores 1 with itself at every prefix.
    own = rotated.stored_queries(sample_vectors[:3]).vectors
    np.testing.assert_allclose((truncate(own, 32) * truncate(rotated.vectors(np.arange(3)), 32)).sum(1), 1, atol=1e-5)


def test_auto_rotates_a_model_that_does_not_nest(indexes):
    decision = indexes["auto"].manifest.rotation.decision["full"]
    assert decision["method"] == "pca", decision
    assert decision["agreement"]["mean_rotated"] > decision["agreement"]["mean_model_order"]
    np.testing.assert_array_equal(indexes["auto"].rotation(), indexes["pca"].rotation())


def test_auto_keeps_the_order_of_vectors_that_already_nest(tmp_path):
    # Independent dims with variance decaying along them: the model's order is already the best.
    vectors = np.random.default_rng(5).normal(size=(1500, 64)) * np.geomspace(3.0, 0.05, 64)
    index = Index.load(vector_index(tmp_path / "nested", vectors, IndexConfig(shortlists=(make_spec(16),))))
    decision = index.manifest.rotation.decision["full"]
    assert index.rotation() is None and decision["method"] == "none", decision
    assert not index.manifest.rotation.files and index.manifest.format_version == FORMAT_VERSION
    assert not (tmp_path / "nested" / "rotation.f32").exists()


def test_rotated_results_hold_across_add_delete_and_compact(tmp_path, sample_vectors, queries):
    path = vector_index(tmp_path / "idx", sample_vectors[:200], IndexConfig(shortlists=SHORTLISTS, rotation="pca"))
    rotation_bytes = (path / "rotation.f32").read_bytes()
    add_documents(path, [(documents(100, 200), sample_vectors[200:])])  # vectors as the model gives them

    def check(index: Index, live: np.ndarray) -> None:
        truth = np.argsort(-(queries @ sample_vectors[live].T), axis=1, kind="stable")[:, :10]
        ids = np.array(index.ids())
        expected_ids = np.array([f"doc-{i}" for i in live])[truth]
        exact = exact_search(index, queries, 10)[1]
        funnel = run_funnel(index, queries, Plan.parse(f"32:{index.count},full:10"), 10).positions
        assert (ids[exact] == expected_ids).mean() > 0.98  # float16 storage may swap near-ties
        np.testing.assert_array_equal(funnel, exact)

    check(Index.load(path), np.arange(300))
    dropped = [f"doc-{i}" for i in range(0, 300, 7)]
    delete_documents(path, dropped)
    live = np.array([i for i in range(300) if i % 7])
    before = Index.load(path)
    check(before, live)
    compact_index(path)
    after = Index.load(path)
    check(after, live)
    assert len(after.segments) == 1 and (path / "rotation.f32").read_bytes() == rotation_bytes
    np.testing.assert_array_equal(after.rotation(), before.rotation())
    assert after.manifest.format_version == FORMAT_VERSION and verify_index(path).ok


def test_the_rotation_file_is_checked(tmp_path, sample_vectors):
    path = vector_index(tmp_path / "idx", sample_vectors, IndexConfig(shortlists=SHORTLISTS, rotation="pca"))
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION and set(manifest["rotation"]["files"]) == {"rotation.f32"}
    data = bytearray((path / "rotation.f32").read_bytes())
    data[100] ^= 0x40
    (path / "rotation.f32").write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="rotation.f32"):
        Index.load(path)
    assert not verify_index(path).ok


def test_an_index_from_before_rotations_loads_and_searches_unchanged(tmp_path, indexes, queries):
    old = tmp_path / "old"
    shutil.copytree(indexes["none"].path, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest.pop("rotation")  # the manifest as funnel wrote it before rotations existed
    manifest.pop("checksum")  # and before manifests carried their own checksum
    manifest["format_version"] = 2
    (old / "manifest.json").write_text(json.dumps(manifest))
    index = Index.load(old)
    assert index.manifest.rotation is None and index.rotation() is None
    np.testing.assert_array_equal(index.stored_queries(queries).vectors, queries)
    plan = Plan.parse("64:100,full:10")
    expected = run_funnel(indexes["none"], queries, plan, 10)
    found = run_funnel(index, queries, plan, 10)
    np.testing.assert_array_equal(found.positions, expected.positions)
    np.testing.assert_array_equal(found.scores, expected.scores)
    assert verify_index(old).ok
    # Rewritten by a change, it stays an index without a rotation, now with the manifest's checksum.
    delete_documents(old, [index.ids()[0]])
    rewritten = json.loads((old / "manifest.json").read_text())
    assert "rotation" not in rewritten and rewritten["format_version"] == FORMAT_VERSION and "checksum" in rewritten


def test_info_shows_the_decision(indexes):
    result = CliRunner().invoke(app, ["info", str(indexes["auto"].path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["rotation"]["by_depth"] == {"full": "pca"} and info["rotation"]["requested"] == "auto"
    assert info["rotation_decision"]["full"]["agreement"]["queries"] == 200
    text = CliRunner().invoke(app, ["info", str(indexes["auto"].path)]).output
    assert "rotation   pca [auto]: rotated prefixes agree better" in text


def test_bad_rotation_name():
    from funnel.errors import InputError

    with pytest.raises(InputError, match="unknown rotation 'svd': choose one of auto, pca, none"):
        IndexConfig(rotation="svd")


def test_tuned_plan_on_a_rotated_index_meets_its_target(indexes, sample_vectors):
    from funnel.agreement import recall_against
    from funnel.tuning import TuneOptions, tune
    from funnel.tuning.measure import TuningReference, run_plan

    index = indexes["pca"]
    plan = tune(index, None, 0.95, 5, options=TuneOptions(calibration_size=120, timing_queries=5, dims=(32, 64)))
    # Unseen queries: perturbed documents, in the model's order like any query.
    rng = np.random.default_rng(9)
    unseen = normalize(sample_vectors[rng.choice(300, 60, replace=False)] + 0.3 * normalize(rng.normal(size=(60, 384))) / 384**0.5 * 8)
    truth = TuningReference(index).search(unseen, 5)
    recall = recall_against(run_plan(index, unseen, plan.stages, 5), truth).mean()
    assert recall >= 0.93, (plan.stages_text, recall)
