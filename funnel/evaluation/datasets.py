"""Load evaluation data in BEIR layout: a corpus, queries and qrels for one split.

A BEIR folder holds ``corpus.jsonl`` (one ``{"_id", "title", "text"}`` object a line),
``queries.jsonl`` (``{"_id", "text"}``) and ``qrels/<split>.tsv``
(``query-id<TAB>corpus-id<TAB>score`` with a header line). Every problem with the files raises one ``InputError`` whose message names
the file, the line where there is one, what was expected, and what to do. Judgements that name a
query or document the folder does not hold are skipped and counted in ``BeirDataset.warnings``:
the library never prints, the caller decides what to show.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice
from dataclasses import dataclass
from pathlib import Path

from funnel.errors import InputError
from funnel.evaluation.metrics import Qrels

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
QRELS_FOLDER = "qrels"

_QRELS_EXPECTED = (
    "expected 'query-id<TAB>corpus-id<TAB>score' (BEIR) or 'query-id 0 doc-id level' (TREC) "
    "with an integer score"
)


@dataclass(frozen=True)
class BeirDataset:
    """One split of a BEIR folder, with judgements checked against the corpus and queries.

    ``queries`` keeps only the queries judged in this split (as BEIR's own loader does), in file
    order. ``qrels`` keeps only judgements whose query and document exist. ``warnings`` says, one
    line each, what was skipped and why; it is empty for a clean folder.
    """

    path: Path
    split: str
    corpus_ids: list[str]
    corpus_titles: list[str]
    corpus_texts: list[str]
    queries: dict[str, str]
    qrels: Qrels
    warnings: list[str]

    def passages(self) -> list[str]:
        """Each document as ``title + " " + text`` (just the text when the title is empty)."""
        return [
            f"{title} {text}" if title else text
            for title, text in zip(self.corpus_titles, self.corpus_texts)
        ]


def load_beir(path: str | Path, split: str = "test") -> BeirDataset:
    """Load ``split`` of the BEIR folder at ``path``: the whole corpus, its queries and qrels.

    A document whose ``_id`` repeats an earlier line is skipped (the first one stays) and counted
    in ``warnings``: real corpora have such repeats (Debian's repeats 14 ids on 50 lines).
    Raises InputError for a missing folder, file or split, a malformed line, a duplicate query
    id, or when no query of ``queries.jsonl`` is judged in the split.
    """
    folder = Path(path)
    _check_folder(folder)
    qrels_path = _qrels_path(folder, split)
    ids, titles, texts, warnings = _read_unique_corpus(folder / CORPUS_FILE)
    all_queries = load_queries(folder / QUERIES_FILE)
    raw_qrels = load_qrels(qrels_path)
    qrels, qrels_warnings = known_judgements(raw_qrels, all_queries, set(ids), qrels_path)
    warnings.extend(qrels_warnings)
    queries = {query_id: text for query_id, text in all_queries.items() if query_id in qrels}
    if not queries:
        raise InputError(
            f"{qrels_path}: none of the {len(all_queries)} queries in {QUERIES_FILE} is judged "
            f"in split {split!r} (qrels name queries such as {_examples(raw_qrels)}, "
            f"{QUERIES_FILE} has {_examples(all_queries)}); check the split and the query ids"
        )
    return BeirDataset(folder, split, ids, titles, texts, queries, qrels, warnings)


@dataclass(frozen=True)
class _NumberedBatch:
    """A slice of ``corpus.jsonl`` with each document's line, for messages about repeats."""

    ids: list[str]
    titles: list[str]
    texts: list[str]
    lines: list[int]


def _iter_numbered_corpus(file: Path, batch_size: int) -> Iterator[_NumberedBatch]:
    """Read ``corpus.jsonl`` in batches, keeping line numbers.

    ``_id`` and ``text`` are required (a numeric ``_id`` is read as its string); ``title`` may be
    missing or null and then reads as "". Indexing does not use this reader: it goes through
    :func:`funnel.corpus.open_corpus`, which also validates texts; this one only serves the ids and
    texts of an evaluation, keeping rows that indexing would skip so their judgements still count.
    """
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: read at least 1 document per batch")
    batch = _NumberedBatch([], [], [], [])
    empty = True
    for line_number, record in _read_jsonl(file):
        empty = False
        batch.ids.append(_string_field(record, "_id", file, line_number))
        batch.titles.append(_string_field(record, "title", file, line_number, default=""))
        batch.texts.append(_string_field(record, "text", file, line_number))
        batch.lines.append(line_number)
        if len(batch.ids) == batch_size:
            yield batch
            batch = _NumberedBatch([], [], [], [])
    if batch.ids:
        yield batch
    if empty:
        raise InputError(f"{file} holds no documents: a BEIR corpus needs one JSON object a line")


def _read_unique_corpus(file: Path) -> tuple[list[str], list[str], list[str], list[str]]:
    """Ids, titles and texts of the first document of each id, and a warning about repeats."""
    ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    first_lines: dict[str, int] = {}
    repeats: list[tuple[str, int]] = []
    for batch in _iter_numbered_corpus(file, 10_000):
        for doc_id, title, text, line in zip(batch.ids, batch.titles, batch.texts, batch.lines):
            if doc_id in first_lines:
                repeats.append((doc_id, line))
                continue
            first_lines[doc_id] = line
            ids.append(doc_id)
            titles.append(title)
            texts.append(text)
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
    for line_number, record in _read_jsonl(file):
        query_id = _string_field(record, "_id", file, line_number)
        _check_unique(query_id, lines, file, line_number)
        queries[query_id] = _string_field(record, "text", file, line_number)
    if not queries:
        raise InputError(f"{file} holds no queries: write one {{\"_id\", \"text\"}} object a line")
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
    for row, (line_number, text) in enumerate(_read_lines(file)):
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
        raise InputError(f"{file} holds no judgements: {_QRELS_EXPECTED}")
    return qrels


def _check_folder(folder: Path) -> None:
    """Fail with what is there when ``folder`` is not a BEIR folder with corpus and queries."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file; give the BEIR folder that holds {CORPUS_FILE}")
    if not folder.is_dir():
        parent = folder.parent
        where = (f"{parent} holds: {_listing(parent)}" if parent.is_dir()
                 else f"{parent} does not exist either")
        raise InputError(f"no dataset folder at {folder}; {where}")
    for name in (CORPUS_FILE, QUERIES_FILE, QRELS_FOLDER):
        if not (folder / name).exists():
            raise InputError(
                f"{folder} has no {name} (it holds: {_listing(folder)}); a BEIR folder needs "
                f"{CORPUS_FILE}, {QUERIES_FILE} and {QRELS_FOLDER}/<split>.tsv"
            )


def _qrels_path(folder: Path, split: str) -> Path:
    """The qrels file of ``split``, or an error listing the splits that exist."""
    qrels_folder = folder / QRELS_FOLDER
    path = qrels_folder / f"{split}.tsv"
    if not path.is_file():
        splits = sorted(p.stem for p in qrels_folder.glob("*.tsv") if p.is_file())
        found = ", ".join(splits) if splits else "none (no .tsv file)"
        raise InputError(
            f"{qrels_folder} has no split {split!r} ({split}.tsv); splits there: {found}"
        )
    return path


def known_judgements(
    qrels: Qrels, queries: dict[str, str], doc_ids: set[str], qrels_path: Path, documents: str = CORPUS_FILE
) -> tuple[Qrels, list[str]]:
    """Keep judgements whose query and document exist; say what was dropped and how much.

    ``documents`` names where ``doc_ids`` come from in the warnings (the corpus file, an index).
    """
    kept: Qrels = {}
    unknown_queries: dict[str, int] = {}
    unknown_docs: dict[str, int] = {}
    for query_id, judgements in qrels.items():
        if query_id not in queries:
            unknown_queries[query_id] = len(judgements)
            continue
        for doc_id, level in judgements.items():
            if doc_id in doc_ids:
                kept.setdefault(query_id, {})[doc_id] = level
            else:
                unknown_docs[doc_id] = unknown_docs.get(doc_id, 0) + 1
    warnings: list[str] = []
    if unknown_queries:
        warnings.append(
            f"{qrels_path}: skipped {sum(unknown_queries.values())} judgements of "
            f"{len(unknown_queries)} query ids not in {QUERIES_FILE} "
            f"(such as {_examples(unknown_queries)})"
        )
    if unknown_docs:
        warnings.append(
            f"{qrels_path}: skipped {sum(unknown_docs.values())} judgements of "
            f"{len(unknown_docs)} document ids not in {documents} "
            f"(such as {_examples(unknown_docs)})"
        )
    lost = [query_id for query_id in qrels if query_id in queries and query_id not in kept]
    if lost:
        warnings.append(
            f"{qrels_path}: {len(lost)} queries lost every judgement to unknown document ids "
            f"and are left out (such as {_examples(lost)})"
        )
    return kept, warnings


def _read_lines(file: Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines of a UTF-8 text file with their 1-based numbers."""
    if not file.is_file():
        folder = file.parent
        where = (f"{folder} holds: {_listing(folder)}" if folder.is_dir()
                 else f"{folder} does not exist")
        raise InputError(f"no file {file}; {where}")
    with file.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as error:
                raise InputError(
                    f"{file} line {line_number}: not UTF-8 ({error.reason}); save the file as UTF-8"
                ) from None
            if text:
                yield line_number, text


def _read_jsonl(file: Path) -> Iterator[tuple[int, dict[str, object]]]:
    """One JSON object per non-blank line, with its line number."""
    for line_number, text in _read_lines(file):
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(
                f"{file} line {line_number}: not valid JSON ({error.msg} at column {error.colno}); "
                "write one JSON object a line"
            ) from None
        if not isinstance(record, dict):
            raise InputError(
                f"{file} line {line_number}: expected a JSON object, found {type(record).__name__}"
            )
        yield line_number, record


def _string_field(
    record: dict[str, object], key: str, file: Path, line_number: int, default: str | None = None
) -> str:
    """``record[key]`` as a string; ids may be JSON integers, optional fields may be null."""
    value = record.get(key)
    if value is None and default is not None:
        return default
    if isinstance(value, str):
        return value
    if key == "_id" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    found = "no such field" if key not in record else f"found {json.dumps(value)[:40]}"
    raise InputError(f"{file} line {line_number}: expected a string \"{key}\" ({found})")


def _check_unique(item_id: str, seen: dict[str, int], file: Path, line_number: int) -> None:
    """Remember where ``item_id`` was seen; fail on its second appearance."""
    if item_id in seen:
        raise InputError(
            f"{file} line {line_number}: duplicate _id {item_id!r} (first on line "
            f"{seen[item_id]}); ids must be unique"
        )
    seen[item_id] = line_number


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
        raise InputError(
            f"{file} line {line_number}: found {len(fields)} columns; {_QRELS_EXPECTED}"
        )
    if not _is_integer(level):
        raise InputError(
            f"{file} line {line_number}: score {level!r} is not an integer; {_QRELS_EXPECTED}"
        )
    query_id, doc_id = query_id.strip(), doc_id.strip()
    if not query_id or not doc_id:
        raise InputError(
            f"{file} line {line_number}: empty query or document id; {_QRELS_EXPECTED}"
        )
    return query_id, doc_id, int(level)


def _is_integer(text: str) -> bool:
    """True for optionally signed decimal integers such as "2" or "-1"."""
    return text.strip().lstrip("+-").isdigit()


def _listing(folder: Path, limit: int = 12) -> str:
    """The names in ``folder`` (folders with a trailing slash), sorted, for an error message."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "nothing"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _examples(ids: Iterable[str], limit: int = 3) -> str:
    """A few ids of a dict or list for a message, e.g. ``'1', '2', '3', …``."""
    items = list(islice(ids, limit + 1))
    shown = ", ".join(repr(item) for item in items[:limit])
    return (shown + ", …" if len(items) > limit else shown) or "none"


__all__ = [
    "BeirDataset",
    "known_judgements",
    "load_beir",
    "load_qrels",
    "load_queries",
]
