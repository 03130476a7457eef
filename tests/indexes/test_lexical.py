"""The lexical index beside the vectors: BM25 candidates in plans, kept current by add, delete,
compact and resume as a fresh build would make it, checked like every other file, and absent
(with plans unchanged) in an index built without one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from index_helpers import unit_rows

from funnel.corpus import DOCUMENT_SCHEMA
from funnel.errors import IndexFormatError, InputError
from funnel.indexes.builder import IndexConfig, write_index
from funnel.indexes.index import Index
from funnel.indexes.shortlist import make_spec
from funnel.indexes.updates import add_documents, compact_index, delete_documents
from funnel.indexes.verify import verify_index
from funnel.search.plan import Plan, Stage
from funnel.search.run import run_funnel

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "debian" / "corpus.jsonl"
DIM = 32
CONFIG = IndexConfig(shortlists=(make_spec(8),), rotation="none")
# Known-item queries that name a package's rare terms; their vectors (rare_vectors) carry the
# package's signal in the trailing dims only, as a rotated index gives a rare topic's: the 8-dim
# shortlist misses the package, full dims rank it first, and BM25 finds it by its terms.
RARE = ["NOLO bootloader flasher for Nokia Internet Tablets", "ABNT standard LaTeX class"]
RARE_IDS = ["0xffff", "abntex"]


@pytest.fixture(scope="module")
def packages() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()][:120]


def batch(rows: list[dict]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [
            pa.array([r["_id"] for r in rows]),
            pa.array([r.get("title") or None for r in rows], pa.string()),
            pa.array([r["text"] for r in rows]),
            pa.array([None] * len(rows), pa.string()),
        ],
        schema=DOCUMENT_SCHEMA,
    )


def vectors_of(rows: list[dict]) -> np.ndarray:
    """A vector per package that depends on its id only, so every build gives a document the same one."""
    return np.stack([unit_rows(1, DIM, seed=sum(map(ord, r["_id"])) * 7919 + len(r["_id"]))[0] for r in rows])


def build(path: Path, rows: list[dict], config: IndexConfig = CONFIG) -> Path:
    return write_index([(batch(rows), vectors_of(rows))], path, model="hash", dim=DIM, config=config)


def lexical_hits(index: Index, texts: list[str], n: int = 15) -> list[list[tuple[str, float]]]:
    assert index.lexical is not None
    scores, positions = index.lexical.search(texts, n)
    ids = index.ids()
    return [[(ids[p], round(float(s), 4)) for s, p in zip(row_s, row_p) if p >= 0] for row_s, row_p in zip(scores, positions)]


def rare_vectors() -> np.ndarray:
    vectors = vectors_of([{"_id": i} for i in RARE_IDS])
    vectors[:, :8] *= -0.3  # the prefix points away from the package; the full vector stays close
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def query_vectors(texts: list[str]) -> np.ndarray:
    return rare_vectors() if texts == RARE else vectors_of([{"_id": t} for t in texts])


def search_ids(index: Index, texts: list[str], plan: str) -> list[list[str]]:
    result = run_funnel(index, query_vectors(texts), Plan.parse(plan), 10, texts=texts)
    ids = index.ids()
    return [[ids[p] for p in row if p >= 0] for row in result.positions]


def test_bm25_candidates_find_what_the_shortlist_misses(tmp_path, packages):
    index = Index.load(build(tmp_path / "index", packages))
    assert index.has_lexical and index.manifest.lexical is not None and index.manifest.lexical.documents == len(packages)
    dense = search_ids(index, RARE, "8:10,full:10")
    union = search_ids(index, RARE, "8:10+bm25:20,full:10")
    for want, without, with_lexical in zip(RARE_IDS, dense, union):
        assert want in packages_ids(packages)
        assert want not in without and with_lexical[0] == want
    # The union is rescored exactly: each hit's score is its full-dim cosine.
    queries = rare_vectors()
    result = run_funnel(index, queries, Plan.parse("8:10+bm25:20,full:10"), 10, texts=RARE)
    for row, (scores, positions) in enumerate(zip(result.scores, result.positions)):
        valid = positions >= 0
        np.testing.assert_allclose(scores[valid], index.vectors(positions[valid]) @ queries[row], atol=1e-3)
        assert list(scores[valid]) == sorted(scores[valid], reverse=True)


def packages_ids(rows: list[dict]) -> set[str]:
    return {r["_id"] for r in rows}


def test_add_delete_compact_and_resume_give_a_fresh_builds_candidates(tmp_path, packages):
    path = build(tmp_path / "index", packages[:80])
    add_documents(path, [(batch(packages[80:]), vectors_of(packages[80:]))])
    gone = ["0ad-data", "2048", packages[90]["_id"]]
    delete_documents(path, gone)
    live = [r for r in packages if r["_id"] not in gone]
    fresh = Index.load(build(tmp_path / "fresh", live))
    texts = RARE + ["real-time strategy game of ancient warfare", "puzzle game slide tiles"]
    changed = Index.load(path)
    assert lexical_hits(changed, texts) == lexical_hits(fresh, texts)
    assert all(hit[0] not in gone for row in lexical_hits(changed, texts, 200) for hit in row)
    assert search_ids(changed, texts, "8:10+bm25:20,full:10") == search_ids(fresh, texts, "8:10+bm25:20,full:10")
    compact_index(path)
    compacted = Index.load(path)
    assert lexical_hits(compacted, texts) == lexical_hits(fresh, texts)
    assert verify_index(path).ok
    # Only the current version's lexical folder stays once no reader can need the older ones.
    delete_documents(path, [packages[100]["_id"]])
    kept = {Index.load(path).manifest.lexical.name, compacted.manifest.lexical.name}
    assert {p.name for p in path.glob("lexical-*")} == kept and len(kept) == 2


def test_a_resumed_build_gets_its_lexical_index(tmp_path, packages):
    def batches(fail_at: int | None):
        for number, start in enumerate(range(0, len(packages), 40)):
            if number == fail_at:
                raise KeyboardInterrupt
            rows = packages[start : start + 40]
            yield batch(rows), vectors_of(rows)

    target = tmp_path / "index"
    with pytest.raises(KeyboardInterrupt):
        write_index(batches(2), target, model="hash", dim=DIM, config=CONFIG)
    write_index(batches(None), target, model="hash", dim=DIM, config=CONFIG, resume=True)
    fresh = Index.load(build(tmp_path / "fresh", packages))
    assert lexical_hits(Index.load(target), RARE) == lexical_hits(fresh, RARE)


def test_an_index_without_a_lexical_index_loads_and_searches_unchanged(tmp_path, packages):
    path = build(tmp_path / "plain", packages, IndexConfig(shortlists=(make_spec(8),), rotation="none", lexical=False))
    manifest = json.loads((path / "manifest.json").read_text())
    assert "lexical" not in manifest and not list(path.glob("lexical-*"))
    index = Index.load(path)
    assert not index.has_lexical
    with_lexical = Index.load(build(tmp_path / "lexical", packages))
    assert search_ids(index, RARE, "8:20,full:10") == search_ids(with_lexical, RARE, "8:20,full:10")
    with pytest.raises(InputError, match="keeps no lexical index.*--lexical"):
        search_ids(index, RARE, "8:20+bm25:10,full:10")
    add_documents(path, [(batch([{"_id": "new-pkg", "text": "a new package"}]), vectors_of([{"_id": "new-pkg"}]))])
    assert "lexical" not in json.loads((path / "manifest.json").read_text())


def test_a_damaged_lexical_file_is_refused(tmp_path, packages):
    path = build(tmp_path / "index", packages)
    (name,) = [p for p in path.glob("lexical-*")]
    target = name / "data.csc.index.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="data.csc.index.npy"):
        Index.load(path)
    assert any("data.csc.index.npy" in problem for problem in verify_index(path).problems)


def test_plans_name_lexical_candidates_on_the_first_stage_only(tmp_path, packages):
    plan = Plan.parse("64:400+bm25:50,full:10")
    assert plan[0] == Stage(dim=64, candidates=400, lexical=50) and str(plan) == "64:400+bm25:50,full:10"
    assert Plan.parse(str(plan)) == plan and plan[0].passes_on == 450
    for bad in ("64:400+bm25:x,full:10", "64:400+tfidf:5,full:10", "64:400+bm25:-1,full:10"):
        with pytest.raises(InputError):
            Plan.parse(bad)
    index = Index.load(build(tmp_path / "index", packages))
    queries = rare_vectors()
    for bad, message in (
        ("8:20+bm25:10", "rescored by the next stage"),
        ("8:20,full:10+bm25:5", "only the first stage"),
    ):
        with pytest.raises(InputError, match=message):
            run_funnel(index, queries, Plan.parse(bad), 10, texts=RARE)
    with pytest.raises(InputError, match="needs the query texts"):
        run_funnel(index, queries, Plan.parse("8:20+bm25:10,full:10"), 10)
    with pytest.raises(InputError, match="one query text per query vector"):
        run_funnel(index, queries, Plan.parse("8:20+bm25:10,full:10"), 10, texts=RARE[:1])
    # A later stage may keep up to what the union passes on.
    run_funnel(index, queries, Plan.parse("8:20+bm25:10,full:30"), 10, texts=RARE)


def test_hybrid_ranking_fuses_the_dense_and_bm25_ranks(tmp_path, packages):
    from funnel.search.fusion import reciprocal_rank_fusion

    plan = Plan.parse("8:10+bm25:20,full:10+rrf")
    assert plan[-1].fusion == "rrf" and str(plan) == "8:10+bm25:20,full:10+rrf" and Plan.parse(str(plan)) == plan
    index = Index.load(build(tmp_path / "index", packages))
    queries = rare_vectors()
    fused = run_funnel(index, queries, plan, 10, texts=RARE)
    union = run_funnel(index, queries, Plan.parse("8:10+bm25:20,full:30"), 30, texts=RARE)
    _, lexical = index.lexical.search(RARE, 20)
    expected_scores, expected = reciprocal_rank_fusion([union.positions, lexical], 10)
    np.testing.assert_array_equal(fused.positions, expected)
    np.testing.assert_allclose(fused.scores, expected_scores)
    # The package both rankings put first comes first.
    assert [index.ids()[int(row[0])] for row in fused.positions] == RARE_IDS
    for bad, message in (("8:10,full:10+rrf", "add \\+bm25:N to the first stage"), ("8:10+bm25:5+rrf,full:10", "only the last stage")):
        with pytest.raises(InputError, match=message):
            run_funnel(index, queries, Plan.parse(bad), 10, texts=RARE)
    with pytest.raises(InputError, match="not DIM:CANDIDATES"):
        Plan.parse("8:10+bm25:5,full:10+mix")


def test_deleting_every_document_leaves_an_empty_lexical_index_that_fills_again(tmp_path, packages):
    path = build(tmp_path / "index", packages[:10])
    delete_documents(path, [r["_id"] for r in packages[:10]])
    empty = Index.load(path)
    assert empty.lexical is not None and empty.manifest.lexical.documents == 0
    scores, positions = empty.lexical.search(RARE, 5)
    assert (positions == -1).all() and verify_index(path).ok
    add_documents(path, [(batch(packages[76:78]), vectors_of(packages[76:78]))])
    assert lexical_hits(Index.load(path), ["ABNT standard"])[0][0][0] == "abntex"
