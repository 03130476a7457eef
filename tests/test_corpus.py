import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from funnel.corpus import CorpusColumns, document_text, open_corpus
from funnel.errors import InputError


def write_parquet(path, **columns):
    pq.write_table(pa.table(columns), path)
    return path


def read_all(corpus):
    return pa.Table.from_batches(list(corpus.batches())).to_pylist()


def test_parquet_rows_come_out_with_title_and_metadata(tmp_path):
    path = write_parquet(tmp_path / "c.parquet", id=["a", "b"], title=["T", None], text=["one", "two"], lang=["en", "fr"])
    rows = read_all(open_corpus(path))
    assert [r["id"] for r in rows] == ["a", "b"]
    assert rows[0]["title"] == "T" and rows[1]["title"] is None
    assert json.loads(rows[1]["metadata"]) == {"lang": "fr"}


def test_parquet_is_read_in_batches(tmp_path):
    path = write_parquet(tmp_path / "c.parquet", id=[str(i) for i in range(10)], text=[f"t{i}" for i in range(10)])
    batches = list(open_corpus(path, batch_size=3).batches())
    assert [b.num_rows for b in batches] == [3, 3, 3, 1]
    assert open_corpus(path).num_rows == 10


def test_configured_column_names(tmp_path):
    path = write_parquet(tmp_path / "c.parquet", doc=["x"], body=["hello"])
    rows = read_all(open_corpus(path, CorpusColumns(id="doc", text="body")))
    assert rows[0]["id"] == "x" and rows[0]["text"] == "hello"


def test_beir_folder_and_jsonl(data_dir):
    beir = open_corpus(data_dir / "cranfield", batch_size=500, skip_invalid=True)
    lines = (data_dir / "cranfield" / "corpus.jsonl").read_text().splitlines()
    assert beir.format == "jsonl" and beir.num_rows == len(lines)
    first = next(beir.batches()).to_pylist()[0]
    assert first["id"] == "1" and first["title"].startswith("experimental investigation")


def test_document_text_joins_title_and_text():
    assert document_text("Title", " body ") == "Title body"
    assert document_text(None, "body") == "body"


def test_missing_text_column_lists_the_columns_there_are(tmp_path):
    path = write_parquet(tmp_path / "c.parquet", id=["a"], body=["x"], lang=["en"])
    with pytest.raises(InputError, match=r"has no text column; its columns are: id, body, lang \(choose one with --text-column\)"):
        read_all(open_corpus(path))


def test_named_column_that_is_absent(tmp_path):
    path = write_parquet(tmp_path / "c.parquet", id=["a"], text=["x"])
    with pytest.raises(InputError, match=r"no id column 'doc_id'; its columns are: id, text"):
        read_all(open_corpus(path, CorpusColumns(id="doc_id")))


@pytest.mark.parametrize("text, word", [(None, "null"), ("   ", "empty")])
def test_null_or_empty_text_names_the_row(tmp_path, text, word):
    """Only a row with neither title nor text is refused."""
    path = write_parquet(tmp_path / "c.parquet", id=["a", "b"], text=["fine", text])
    with pytest.raises(InputError, match=rf"row 1 \(id 'b'\): the text is {word}"):
        read_all(open_corpus(path))


def test_duplicate_ids_across_batches(tmp_path):
    path = write_parquet(tmp_path / "c.parquet", id=["a", "b", "c", "a"], text=["1", "2", "3", "4"])
    with pytest.raises(InputError, match=r"row 3: duplicate id 'a'"):
        read_all(open_corpus(path, batch_size=2))


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"does not exist: give a \.parquet file"):
        open_corpus(tmp_path / "nope.parquet")


def test_not_a_parquet(tmp_path):
    path = tmp_path / "c.parquet"
    path.write_text("id,text\n1,hello\n")
    with pytest.raises(InputError, match=r"is not a parquet file"):
        open_corpus(path)


def test_folder_without_corpus(tmp_path):
    (tmp_path / "queries.jsonl").write_text("")
    with pytest.raises(InputError, match=r"folder without corpus.jsonl \(it holds: queries.jsonl\)"):
        open_corpus(tmp_path)


def test_bad_jsonl_line_number(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": \n')
    with pytest.raises(InputError, match=r"c.jsonl line 2: not valid JSON"):
        read_all(open_corpus(path))


def test_empty_corpus(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("\n")
    with pytest.raises(InputError, match=r"holds no documents"):
        read_all(open_corpus(path))


def test_a_title_without_text_is_a_document(tmp_path):
    path = write_parquet(tmp_path / "c.parquet", id=["a"], title=["only a title"], text=[None])
    rows = read_all(open_corpus(path))
    assert rows[0]["text"] == "" and document_text(rows[0]["title"], rows[0]["text"]) == "only a title"


def test_skip_invalid_counts_what_it_drops(data_dir):
    """Cranfield holds two documents with neither title nor text (ids 471 and 995)."""
    ids = [json.loads(line)["_id"] for line in (data_dir / "cranfield" / "corpus.jsonl").read_text().splitlines()]
    corpus = open_corpus(data_dir / "cranfield", skip_invalid=True)
    assert sum(b.num_rows for b in corpus.batches()) == len(ids) - 2
    assert corpus.skipped == {"empty text": 2}
    with pytest.raises(InputError, match=rf"row {ids.index('471')} \(id '471'\): the text is empty \(fix the row, or pass --skip-invalid"):
        read_all(open_corpus(data_dir / "cranfield"))


def test_skip_invalid_keeps_the_first_of_repeated_ids(tmp_path):
    path = write_parquet(tmp_path / "c.parquet", id=["a", "b", "a"], text=["first", "x", "second"])
    corpus = open_corpus(path, skip_invalid=True)
    rows = read_all(corpus)
    assert [(r["id"], r["text"]) for r in rows] == [("a", "first"), ("b", "x")]
    assert corpus.skipped == {"duplicate id": 1}
