"""Read the text files funnel takes in: JSONL, and a BEIR folder's corpus, queries and qrels.

The one reader for indexing (:mod:`funnel.corpus`), evaluation (:mod:`funnel.evaluation.datasets`)
and training (:mod:`funnel.training.data`), with one rule for each choice a reader makes:

- **JSONL**: UTF-8, one JSON object a line; blank lines are skipped. A bad line raises one
  :class:`~funnel.errors.InputError` naming the file and the line.
- **Qrels**: BEIR TSV (``query-id<TAB>corpus-id<TAB>score``) or TREC (``query-id iteration doc-id
  level``) with integer levels. A header is optional: a first line whose score column is a word
  (BEIR writes ``score``) is the header and is skipped; any other first line is a judgement.
- **A document's text**: ``title + " " + text``, each stripped, or just the text when the title is
  empty (:func:`document_text`); the reference NDCG figures in BEIR and MTEB encode documents so.
- **BEIR ids**: ``_id`` is a string or a JSON integer (read as its string); a title may be missing
  or null and reads as "".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

from funnel.errors import InputError

Qrels = dict[str, dict[str, int]]
"""Query id -> document id -> judged relevance level (graded gain)."""

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
QRELS_FOLDER = "qrels"

QRELS_EXPECTED = "expected 'query-id<TAB>corpus-id<TAB>score' (BEIR) or 'query-id 0 doc-id level' (TREC) with an integer score"


def document_text(title: str | None, text: str) -> str:
    """The string that gets encoded for a document: ``title + " " + text``, as BEIR evaluations do."""
    return f"{title.strip()} {text.strip()}".strip() if title else text.strip()


def read_lines(file: Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines of a UTF-8 text file, stripped, with their 1-based numbers."""
    if not file.is_file():
        folder = file.parent
        where = f"{folder} holds: {listing(folder)}" if folder.is_dir() else f"{folder} does not exist"
        raise InputError(f"no file {file}; {where}")
    with file.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as error:
                raise InputError(f"{file} line {line_number}: not UTF-8 ({error.reason}); save the file as UTF-8") from None
            if text:
                yield line_number, text


def read_jsonl(file: Path) -> Iterator[tuple[int, dict[str, object]]]:
    """One JSON object per non-blank line, with its line number."""
    for line_number, text in read_lines(file):
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(
                f"{file} line {line_number}: not valid JSON ({error.msg} at column {error.colno}); write one JSON object a line"
            ) from None
        if not isinstance(record, dict):
            raise InputError(f"{file} line {line_number}: expected a JSON object, found {type(record).__name__}")
        yield line_number, record


def string_field(record: dict[str, object], key: str, file: Path, line_number: int, default: str | None = None) -> str:
    """``record[key]`` as a string; ids may be JSON integers, optional fields may be null."""
    value = record.get(key)
    if value is None and default is not None:
        return default
    if isinstance(value, str):
        return value
    if key == "_id" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    found = "no such field" if key not in record else f"found {json.dumps(value)[:40]}"
    raise InputError(f'{file} line {line_number}: expected a string "{key}" ({found})')


def read_corpus(file: Path) -> tuple[list[str], list[str], list[str], list[str]]:
    """Ids, titles and texts of a BEIR ``corpus.jsonl``, in file order, and warning lines.

    ``_id`` and ``text`` are required. A document whose ``_id`` repeats an earlier line is skipped
    (the first one stays) and counted in one warning: real corpora have such repeats. Unlike
    :func:`funnel.corpus.open_corpus` (indexing), an empty text is kept, so judgements of such a
    document still count in an evaluation.
    """
    ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    first_lines: dict[str, int] = {}
    repeats: list[tuple[str, int]] = []
    for line_number, record in read_jsonl(file):
        doc_id = string_field(record, "_id", file, line_number)
        title = string_field(record, "title", file, line_number, default="")
        text = string_field(record, "text", file, line_number)
        if doc_id in first_lines:
            repeats.append((doc_id, line_number))
            continue
        first_lines[doc_id] = line_number
        ids.append(doc_id)
        titles.append(title)
        texts.append(text)
    if not first_lines:
        raise InputError(f"{file} holds no documents: a BEIR corpus needs one JSON object a line")
    warnings: list[str] = []
    if repeats:
        doc_id, line = repeats[0]
        warnings.append(
            f"{file}: skipped {len(repeats)} documents whose _id repeats an earlier line, keeping "
            f"the first (such as {doc_id!r} on line {line}, first on line {first_lines[doc_id]})"
        )
    return ids, titles, texts, warnings


def load_queries(path: str | Path) -> dict[str, str]:
    """Read a BEIR ``queries.jsonl`` into {query id: text}, in file order.

    Raises InputError naming the line of a malformed object or a duplicate id, and when the file
    holds no query.
    """
    file = Path(path)
    queries: dict[str, str] = {}
    lines: dict[str, int] = {}
    for line_number, record in read_jsonl(file):
        query_id = string_field(record, "_id", file, line_number)
        if query_id in lines:
            raise InputError(f"{file} line {line_number}: duplicate _id {query_id!r} (first on line {lines[query_id]}); ids must be unique")
        lines[query_id] = line_number
        queries[query_id] = string_field(record, "text", file, line_number)
    if not queries:
        raise InputError(f'{file} holds no queries: write one {{"_id", "text"}} object a line')
    return queries


def load_qrels(path: str | Path) -> Qrels:
    """Read relevance judgements into {query id: {doc id: level}}, in file order.

    Accepts BEIR TSV (``query-id<TAB>corpus-id<TAB>score``, with or without a header line) and
    TREC qrels (``query-id iteration doc-id level``, whitespace separated). A pair judged twice
    with the same level is read once. Raises InputError naming the line of a malformed row or of a
    pair judged twice with different levels, and when the file holds no judgement.
    """
    file = Path(path)
    qrels: Qrels = {}
    lines: dict[tuple[str, str], int] = {}
    for row, (line_number, text) in enumerate(read_lines(file)):
        fields = text.split("\t") if "\t" in text else text.split()
        if row == 0 and _is_header(fields):
            continue
        query_id, doc_id, level = _qrels_fields(fields, file, line_number)
        judged = qrels.setdefault(query_id, {})
        if doc_id in judged and judged[doc_id] != level:
            raise InputError(
                f"{file} line {line_number}: query {query_id!r} judges document {doc_id!r} "
                f"{level}, but line {lines[(query_id, doc_id)]} judged it {judged[doc_id]}; "
                "keep one judgement per pair"
            )
        lines.setdefault((query_id, doc_id), line_number)
        judged[doc_id] = level
    if not qrels:
        raise InputError(f"{file} holds no judgements: {QRELS_EXPECTED}")
    return qrels


def listing(folder: Path, limit: int = 12) -> str:
    """The names in ``folder`` (folders with a trailing slash), sorted, for an error message."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "nothing"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def examples(ids: Iterable[str], limit: int = 3) -> str:
    """A few ids of a dict or list for a message, e.g. ``'1', '2', '3', …``."""
    items = list(islice(ids, limit + 1))
    shown = ", ".join(repr(item) for item in items[:limit])
    return (shown + ", …" if len(items) > limit else shown) or "none"


def _is_header(fields: list[str]) -> bool:
    """A first line whose score column is a word (BEIR writes ``score``) is a header."""
    last = fields[-1]
    return not any(char.isdigit() for char in last) and any(char.isalpha() for char in last)


def _qrels_fields(fields: list[str], file: Path, line_number: int) -> tuple[str, str, int]:
    """(query id, doc id, level) from a BEIR (3 columns) or TREC (4 columns) qrels row."""
    if len(fields) == 3:
        query_id, doc_id, level = fields
    elif len(fields) == 4:
        query_id, _, doc_id, level = fields
    else:
        raise InputError(f"{file} line {line_number}: found {len(fields)} columns; {QRELS_EXPECTED}")
    if not level.strip().lstrip("+-").isdigit():
        raise InputError(f"{file} line {line_number}: score {level!r} is not an integer; {QRELS_EXPECTED}")
    query_id, doc_id = query_id.strip(), doc_id.strip()
    if not query_id or not doc_id:
        raise InputError(f"{file} line {line_number}: empty query or document id; {QRELS_EXPECTED}")
    return query_id, doc_id, int(level)
