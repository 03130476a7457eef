"""A Ray build (local Ray, 2 encoder actors) writes the index a single-process build writes."""

from __future__ import annotations

import signal

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import SAMPLE

from funnel.backends.ray_build import RayOptions, build_with_ray, sharded_corpus
from funnel.corpus import open_corpus
from funnel.errors import InputError
from funnel.indexes.builder import IndexConfig, build_index
from funnel.indexes.index import Index
from funnel.indexes.shortlist import make_spec
from funnel.indexes.verify import verify_index

SLICE = 120
CONFIG = IndexConfig(shortlists=(make_spec(64), make_spec(128)), encode_batch_size=32)
# Two cores shared with other work: small logical resources, one thread per actor. Reading the
# parquet needs a CPU slot too, so the two actors take half a slot each.
OPTIONS = RayOptions(
    workers=2,
    num_cpus=2,
    cpus_per_worker=0.5,
    batch_size=30,
    env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"},
)
RAY_SECONDS = 420


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The first 120 sample documents as one file and as a folder of two shards."""
    folder = tmp_path_factory.mktemp("ray-corpus")
    table = pq.read_table(SAMPLE).slice(0, SLICE)
    pq.write_table(table, folder / "all.parquet")
    (folder / "shards").mkdir()
    pq.write_table(table.slice(0, 70), folder / "shards" / "part-000.parquet")
    pq.write_table(table.slice(70), folder / "shards" / "part-001.parquet")
    return folder


def _timeout(signum, frame):
    raise TimeoutError(f"the Ray build took more than {RAY_SECONDS} s")


@pytest.mark.slow
def test_ray_build_equals_the_single_process_build(tmp_path, shards, encoder):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'funnel[ray]')")
    local = build_index(open_corpus(shards / "all.parquet"), encoder, tmp_path / "local", CONFIG)
    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(RAY_SECONDS)
    try:
        built = build_with_ray(sharded_corpus(shards / "shards"), encoder, tmp_path / "ray", CONFIG, OPTIONS)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        ray.shutdown()  # a no-op when the build shut down the Ray it started
    mine, theirs = Index.load(local), Index.load(built)
    assert theirs.ids() == mine.ids() and theirs.count == SLICE
    np.testing.assert_allclose(theirs.all_vectors(), mine.all_vectors(), atol=2e-3)  # float16 storage
    assert theirs.documents(list(range(SLICE))) == mine.documents(list(range(SLICE)))
    assert theirs.shortlist_dims == [64, 128] and theirs.manifest.source["built_with"] == "ray"
    assert verify_index(built).ok


def test_repeated_ids_across_shards_stop_before_any_encoding(tmp_path, shards):
    folder = tmp_path / "dup"
    folder.mkdir()
    table = pq.read_table(shards / "all.parquet")
    pq.write_table(table.slice(0, 10), folder / "a.parquet")
    pq.write_table(table.slice(5, 10), folder / "b.parquet")
    with pytest.raises(InputError, match=r"b\.parquet row 0.*duplicate id"):
        sharded_corpus(folder).validate()
    corpus = sharded_corpus(folder, skip_invalid=True)
    assert corpus.validate() == 15 and corpus.skipped == {"duplicate id": 5}


def test_a_ray_build_reads_parquet_only(tmp_path):
    with pytest.raises(InputError, match="holds no .parquet files"):
        sharded_corpus(tmp_path)
    (tmp_path / "c.jsonl").write_text('{"id": "a", "text": "b"}\n')
    with pytest.raises(InputError, match="a Ray build reads parquet"):
        sharded_corpus(tmp_path / "c.jsonl")
