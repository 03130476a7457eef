"""BEIR loading: the real folders load as documented; bad files fail with one actionable line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from funnel.errors import InputError
from funnel.evaluation.datasets import BeirDataset, load_beir
from funnel.readers import load_qrels, load_queries

CORPUS = [
    {"_id": "d1", "title": "Wings", "text": "lift on a wing"},
    {"_id": "d2", "title": "", "text": "drag at high speed"},
    {"_id": "d3", "text": "no title field"},
]
QUERIES = [{"_id": "q1", "text": "wing lift"}, {"_id": "q2", "text": "drag"}, {"_id": "q3", "text": "x"}]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td2\t1\n"


def write_beir(
    folder: Path, corpus: list[dict] | None = None, queries: list[dict] | None = None, splits: dict[str, str] | None = None
) -> Path:
    """A small BEIR folder; each argument replaces the default file contents."""
    (folder / "qrels").mkdir(parents=True)
    write_jsonl(folder / "corpus.jsonl", CORPUS if corpus is None else corpus)
    write_jsonl(folder / "queries.jsonl", QUERIES if queries is None else queries)
    for split, text in ({"test": QRELS} if splits is None else splits).items():
        (folder / "qrels" / f"{split}.tsv").write_text(text)
    return folder


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


# --- the real data: the in-repo slices, counted from their own files ---------------------------


def raw_counts(folder: Path, split: str = "test") -> tuple[int, int, int]:
    """Distinct corpus ids, judged queries and judgements, counted straight from the files."""
    ids = {json.loads(line)["_id"] for line in (folder / "corpus.jsonl").read_text().splitlines() if line.strip()}
    rows = [line.split("\t") for line in (folder / "qrels" / f"{split}.tsv").read_text().splitlines()[1:] if line.strip()]
    return len(ids), len({row[0] for row in rows}), len(rows)


def test_cranfield_loads_with_graded_qrels(data_dir: Path, cranfield: BeirDataset) -> None:
    documents, judged_queries, judgements = raw_counts(data_dir / "cranfield")
    assert len(cranfield.corpus_ids) == len(cranfield.corpus_texts) == documents
    assert len(cranfield.queries) == judged_queries
    assert sum(len(judged) for judged in cranfield.qrels.values()) == judgements
    assert {level for judged in cranfield.qrels.values() for level in judged.values()} == {1, 2, 3, 4}
    assert cranfield.warnings == []
    assert cranfield.passages()[0].startswith(cranfield.corpus_titles[0] + " ")


def test_scifact_splits_keep_only_their_judged_queries(data_dir: Path) -> None:
    test = load_beir(data_dir / "scifact")
    train = load_beir(data_dir / "scifact", split="train")
    assert (len(test.queries), len(train.queries)) == (raw_counts(data_dir / "scifact")[1], raw_counts(data_dir / "scifact", "train")[1])
    assert not set(test.queries) & set(train.queries)
    assert set(test.queries) == set(test.qrels)


def test_debian_repeated_document_ids_are_skipped_with_a_warning(data_dir: Path) -> None:
    debian = load_beir(data_dir / "debian")
    lines = (data_dir / "debian" / "corpus.jsonl").read_text().splitlines()
    repeats = len(lines) - len({json.loads(line)["_id"] for line in lines})
    assert repeats > 0 and len(debian.queries) == raw_counts(data_dir / "debian")[1]
    assert len(set(debian.corpus_ids)) == len(debian.corpus_ids) == len(lines) - repeats
    assert len(debian.warnings) == 1
    assert f"skipped {repeats} documents whose _id repeats an earlier line" in debian.warnings[0]


# --- the whole datasets (pytest -m data) -------------------------------------------------------


@pytest.mark.data
def test_whole_datasets_load_with_their_published_counts(shared_data: Path) -> None:
    cranfield = load_beir(shared_data / "cranfield")
    assert (len(cranfield.corpus_ids), len(cranfield.queries)) == (1400, 225)
    assert sum(len(judged) for judged in cranfield.qrels.values()) == 1612
    assert (len(load_beir(shared_data / "scifact").queries), len(load_beir(shared_data / "scifact", split="train").queries)) == (300, 809)
    debian = load_beir(shared_data / "debian")
    assert len(debian.queries) == 1221 and len(debian.corpus_ids) == 60514 - 50
    assert "skipped 50 documents whose _id repeats an earlier line" in debian.warnings[0]


# --- a small clean folder ----------------------------------------------------------------------


def test_small_folder_loads_in_file_order(tmp_path: Path) -> None:
    dataset = load_beir(write_beir(tmp_path / "tiny"))
    assert dataset.corpus_ids == ["d1", "d2", "d3"]
    assert dataset.corpus_titles == ["Wings", "", ""]
    assert dataset.passages() == ["Wings lift on a wing", "drag at high speed", "no title field"]
    # q3 has no judgement in this split, so it is left out, as BEIR's loader does.
    assert dataset.queries == {"q1": "wing lift", "q2": "drag"}
    assert dataset.qrels == {"q1": {"d1": 2}, "q2": {"d2": 1}}
    assert dataset.warnings == [] and dataset.split == "test"


def test_numeric_ids_read_as_strings(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "queries.jsonl", [{"_id": 7, "text": "seven"}])
    assert load_queries(tmp_path / "queries.jsonl") == {"7": "seven"}


@pytest.mark.parametrize(
    "text",
    [
        "q1\td1\t2\nq1\td2\t0\n",  # BEIR without a header
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\n",  # BEIR with a header
        "q1 0 d1 2\nq1 0 d2 0\n",  # TREC qrels
        "q1\t0\td1\t2\n\nq1\t0\td2\t0\nq1\t0\td1\t2\n",  # TREC with tabs, a blank line, a repeat
    ],
)
def test_load_qrels_formats(tmp_path: Path, text: str) -> None:
    (tmp_path / "qrels.tsv").write_text(text)
    assert load_qrels(tmp_path / "qrels.tsv") == {"q1": {"d1": 2, "d2": 0}}


def test_unknown_ids_in_qrels_are_skipped_and_counted(tmp_path: Path) -> None:
    qrels = QRELS + "q9\td1\t1\nq9\td2\t1\nq1\tnope\t1\nq2\tgone\t1\nq3\tgone\t1\n"
    dataset = load_beir(write_beir(tmp_path / "tiny", splits={"test": qrels}))
    assert dataset.qrels == {"q1": {"d1": 2}, "q2": {"d2": 1}}
    assert set(dataset.queries) == {"q1", "q2"}
    assert len(dataset.warnings) == 3
    assert dataset.warnings[0].endswith("skipped 2 judgements of 1 query ids not in queries.jsonl (such as 'q9')")
    assert dataset.warnings[1].endswith("skipped 3 judgements of 2 document ids not in corpus.jsonl (such as 'nope', 'gone')")
    assert dataset.warnings[2].endswith("1 queries lost every judgement to unknown document ids and are left out (such as 'q3')")


# --- errors: one line that names the problem and the fix --------------------------------------


def test_missing_folder_lists_what_is_there(tmp_path: Path) -> None:
    write_beir(tmp_path / "cranfield")
    with pytest.raises(InputError, match=r"no dataset folder at .*cranfeld; .* holds: cranfield/$"):
        load_beir(tmp_path / "cranfeld")


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "tiny")
    with pytest.raises(InputError, match=r"corpus.jsonl is a file; give the BEIR folder"):
        load_beir(folder / "corpus.jsonl")


def test_missing_file_lists_the_folder(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "tiny")
    (folder / "queries.jsonl").unlink()
    with pytest.raises(
        InputError,
        match=r"tiny has no queries.jsonl \(it holds: corpus.jsonl, qrels/\); "
        r"a BEIR folder needs corpus.jsonl, queries.jsonl and qrels/<split>.tsv",
    ):
        load_beir(folder)


def test_missing_split_lists_the_splits(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "tiny", splits={"train": QRELS, "dev": QRELS})
    with pytest.raises(InputError, match=r"qrels has no split 'test' \(test.tsv\); splits there: dev, train$"):
        load_beir(folder)


def test_standalone_loaders_name_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no file .*queries.jsonl; .* holds: nothing"):
        load_queries(tmp_path / "queries.jsonl")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "q1\td1\t1\nq1\td2\n",
            r"qrels.tsv line 2: found 2 columns; expected 'query-id<TAB>corpus-id<TAB>score' \(BEIR\) or "
            r"'query-id 0 doc-id level' \(TREC\) with an integer score",
        ),
        ("q1\td1\t1\nq1\td2\t0.5\n", r"qrels.tsv line 2: score '0.5' is not an integer; expected"),
        ("query-id\tcorpus-id\tscore\nq1\td1\tyes\n", r"qrels.tsv line 2: score 'yes' is not an integer"),
        (
            "q1\td1\t1\nq1\td1\t2\n",
            r"qrels.tsv line 2: query 'q1' judges document 'd1' 2, but line 1 judged it 1; "
            r"keep one judgement per pair",
        ),
        ("q1\t\t1\n", r"qrels.tsv line 1: empty query or document id"),
        ("query-id\tcorpus-id\tscore\n\n", r"qrels.tsv holds no judgements: expected"),
    ],
)
def test_malformed_qrels_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "qrels.tsv").write_text(text)
    with pytest.raises(InputError, match=message):
        load_qrels(tmp_path / "qrels.tsv")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            '{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": }\n',
            r"queries.jsonl line 2: not valid JSON \(Expecting value at column 23\); write one JSON object a line",
        ),
        ('{"_id": "q1", "text": "a"}\n\n["q2", "b"]\n', r"queries.jsonl line 3: expected a JSON object, found list"),
        ('{"_id": "q1"}\n', r"queries.jsonl line 1: expected a string \"text\" \(no such field\)"),
        ('{"_id": null, "text": "a"}\n', r"queries.jsonl line 1: expected a string \"_id\" \(found null\)"),
        (
            '{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n',
            r"queries.jsonl line 2: duplicate _id 'q1' \(first on line 1\); ids must be unique",
        ),
        ("\n\n", r"queries.jsonl holds no queries"),
    ],
)
def test_malformed_queries_name_the_line(tmp_path: Path, lines: str, message: str) -> None:
    (tmp_path / "queries.jsonl").write_text(lines)
    with pytest.raises(InputError, match=message):
        load_queries(tmp_path / "queries.jsonl")


def test_malformed_corpus_names_the_line(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "tiny")
    with (folder / "corpus.jsonl").open("a") as handle:
        handle.write('{"_id": "d4", "text": 5}\n')
    with pytest.raises(InputError, match=r"corpus.jsonl line 4: expected a string \"text\" \(found 5\)"):
        load_beir(folder)


def test_non_utf8_line_is_named(tmp_path: Path) -> None:
    (tmp_path / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "\xe9"}\n')
    with pytest.raises(InputError, match=r"queries.jsonl line 2: not UTF-8 .*; save the file as UTF-8"):
        load_queries(tmp_path / "queries.jsonl")


def test_empty_corpus_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"corpus.jsonl holds no documents"):
        load_beir(write_beir(tmp_path / "tiny", corpus=[]))


def test_no_judged_query_in_the_split_is_an_error(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "tiny", splits={"test": "1\td1\t1\n2\td2\t1\n"})
    with pytest.raises(
        InputError,
        match=r"test.tsv: none of the 3 queries in queries.jsonl is judged in split "
        r"'test' \(qrels name queries such as '1', '2', queries.jsonl has "
        r"'q1', 'q2', 'q3'\); check the split and the query ids",
    ):
        load_beir(folder)
