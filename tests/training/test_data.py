import json

import pytest

from funnel.errors import InputError
from funnel.training.data import kind_of, load_examples


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pairs_become_anchor_positive(debian_pairs):
    dataset = load_examples([debian_pairs])
    assert dataset.column_names == ["anchor", "positive"]
    assert len(dataset) == 64 and kind_of(dataset) == "pairs"


def test_max_rows_and_seed_pick_a_reproducible_subset(debian_pairs):
    first = load_examples([debian_pairs], max_rows=10, seed=3)
    again = load_examples([debian_pairs], max_rows=10, seed=3)
    assert len(first) == 10 and first["anchor"] == again["anchor"]


def test_scored_pairs(stsb_pairs):
    dataset = load_examples([stsb_pairs])
    assert dataset.column_names == ["sentence1", "sentence2", "score"]
    assert kind_of(dataset) == "scored"


def test_triplets_spread_negatives(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"query": "a", "positive": "b", "negatives": ["c", "d"]}] * 3)
    assert load_examples([path]).column_names == ["anchor", "positive", "negative_1", "negative_2"]


def test_parquet_and_jsonl_read_alike(tmp_path, debian_pairs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in debian_pairs.open()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pairs.parquet")
    assert sorted(load_examples([tmp_path / "pairs.parquet"])["anchor"]) == sorted(load_examples([debian_pairs])["anchor"])


def test_beir_folder_train_qrels(tmp_path):
    (tmp_path / "qrels").mkdir()
    write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "d1", "title": "Wings", "text": "lift"}, {"_id": "d2", "title": "", "text": "drag"}])
    write_jsonl(tmp_path / "queries.jsonl", [{"_id": "q1", "text": "what lifts"}])
    (tmp_path / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n")
    dataset = load_examples([tmp_path])
    assert dataset["anchor"] == ["what lifts"] and dataset["positive"] == ["Wings lift"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"title": "x", "body": "y"}], r"has columns \['title', 'body'\]: expected query/anchor"),
        ([{"query": "x", "positive": ""}], "row 1: column 'positive' is empty"),
        ([{"sentence1": "a", "sentence2": "b", "score": "high"}], "column 'score' must be a number"),
        (
            [{"query": "a", "positive": "b", "negatives": ["c"]}, {"query": "a", "positive": "b", "negatives": ["c", "d"]}],
            "different numbers of negatives",
        ),
    ],
)
def test_bad_rows_are_named(tmp_path, rows, message):
    with pytest.raises(InputError, match=message):
        load_examples([write_jsonl(tmp_path / "bad.jsonl", rows)])


def test_bad_sources(tmp_path, debian_pairs, stsb_pairs):
    with pytest.raises(InputError, match="does not exist"):
        load_examples([tmp_path / "missing.jsonl"])
    (tmp_path / "pairs.csv").write_text("query,positive\na,b\n")
    with pytest.raises(InputError, match="must be .jsonl, .json or .parquet"):
        load_examples([tmp_path / "pairs.csv"])
    (tmp_path / "broken.jsonl").write_text('{"query": "a"\n')
    with pytest.raises(InputError, match="line 1: not valid JSON"):
        load_examples([tmp_path / "broken.jsonl"])
    with pytest.raises(InputError, match="cannot mix scored pairs"):
        load_examples([debian_pairs, stsb_pairs])
    (tmp_path / "beir").mkdir()
    with pytest.raises(InputError, match="missing corpus.jsonl, queries.jsonl, train.tsv"):
        load_examples([tmp_path / "beir"])
