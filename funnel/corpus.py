"""Read a corpus (parquet, JSONL or a BEIR folder) in record batches and validate it.

Every batch comes out with the same schema, :data:`DOCUMENT_SCHEMA`: ``id``, ``title`` (nullable),
``text`` and ``metadata`` (the row's other fields as a JSON object, nullable). Problems (a missing
column, an empty text, a duplicate id) raise :class:`~funnel.errors.InputError` naming the row.
JSONL is parsed by :mod:`funnel.readers`, and a document is encoded as its
:func:`~funnel.readers.document_text` (``title + " " + text``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from funnel.errors import InputError
from funnel.readers import document_text, read_jsonl

DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("text", pa.string(), nullable=False),
        pa.field("metadata", pa.string()),
    ]
)


@dataclass(frozen=True)
class CorpusColumns:
    """Which source columns hold the id, the text and the optional title.

    ``None`` means "find it": ``id`` then ``_id`` for ids, ``text`` for texts, ``title`` if present.
    """

    id: str | None = None
    text: str | None = None
    title: str | None = None


def check_id(value: Any) -> str:
    """The one id rule, the same for building, adding and deleting: an id is a non-empty string
    without leading or trailing white space or control characters (a newline or a NUL would make
    it impossible to name on a command line or in a file), or an integer, taken as its decimal
    string. Anything else raises InputError saying why; ids are never altered to fit."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        kind = "missing" if value is None else f"a {type(value).__name__}"
        raise InputError(f"the id is {kind}, not a string or an integer")
    text = str(value)
    if not text.strip():
        raise InputError("the id is empty")
    if text != text.strip():
        raise InputError(f"the id {text!r} has leading or trailing white space")
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise InputError(f"the id {text!r} holds a control character (a newline, tab or NUL)")
    return text


def check_batch_ids(documents: pa.RecordBatch | pa.Table) -> None:
    """:func:`check_id` for every id of a batch in :data:`DOCUMENT_SCHEMA` (documents given
    to ``write_index`` or ``add_documents`` rather than read from a corpus file)."""
    for number, doc_id in enumerate(documents.column("id").to_pylist(), start=1):
        try:
            check_id(doc_id)
        except InputError as exc:
            raise InputError(f"document {number} of a batch: {exc}") from None


@dataclass
class Corpus:
    """A corpus on disk; iterate :meth:`batches` to read it."""

    path: Path
    format: str  # "parquet" | "jsonl"
    columns: CorpusColumns = CorpusColumns()
    batch_size: int = 1024
    skip_invalid: bool = False
    """Skip rows with no text or a repeated id (keeping the first) instead of refusing the corpus."""
    skipped: dict[str, int] = field(default_factory=dict)
    """After reading with ``skip_invalid``: how many rows were skipped, by reason."""
    _valid_rows: int | None = field(default=None, repr=False)

    def validate(self) -> int:
        """Read the whole corpus once without keeping it, so a bad row is reported before any
        encoding starts rather than an hour into it; returns the number of documents kept."""
        if self._valid_rows is None:
            self._valid_rows = sum(batch.num_rows for batch in self.batches())
        return self._valid_rows

    @property
    def num_rows(self) -> int | None:
        """Row count when cheap to know (parquet metadata, JSONL line count)."""
        if self.format == "parquet":
            return self._parquet_file().metadata.num_rows
        with self.path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Validated batches in :data:`DOCUMENT_SCHEMA`; raises InputError on the first bad row."""
        seen: set[str] = set()
        self.skipped.clear()
        row_offset = 0
        raw = self._parquet_batches() if self.format == "parquet" else self._jsonl_batches()
        for rows, available in raw:
            batch = _to_documents(rows, available, self.columns, self.path, row_offset, seen, self._skips())
            row_offset += len(rows)
            if batch.num_rows:
                yield batch
        if len(seen) == 0:
            raise InputError(f"{self.path} holds no documents")

    def _skips(self) -> dict[str, int] | None:
        return self.skipped if self.skip_invalid else None

    def _parquet_file(self) -> Any:
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise _unreadable_parquet(self.path, exc) from None

    def _parquet_batches(self) -> Iterator[tuple[list[dict[str, Any]], list[str]]]:
        file = self._parquet_file()
        names = file.schema_arrow.names
        batches = file.iter_batches(batch_size=self.batch_size)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as exc:
                raise _unreadable_parquet(self.path, exc) from None
            yield batch.to_pylist(), names

    def _jsonl_batches(self) -> Iterator[tuple[list[dict[str, Any]], list[str]]]:
        rows: list[dict[str, Any]] = []
        names: dict[str, None] = {}
        for _, row in read_jsonl(self.path):
            names.update(dict.fromkeys(row))
            rows.append(row)
            if len(rows) == self.batch_size:
                yield rows, list(names)
                rows = []
        if rows:
            yield rows, list(names)


def _unreadable_parquet(path: Path, exc: Exception) -> InputError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return InputError(f"{path} is not a readable parquet file ({reason}); it may be truncated or damaged: write it again")


def open_corpus(
    source: str | os.PathLike[str], columns: CorpusColumns = CorpusColumns(), batch_size: int = 1024, skip_invalid: bool = False
) -> Corpus:
    """Recognize a parquet file, a JSONL file or a BEIR folder (``corpus.jsonl`` inside)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(f"{path} does not exist: give a .parquet file, a .jsonl file or a BEIR folder")
    if path.is_dir():
        beir = path / "corpus.jsonl"
        if not beir.exists():
            listing = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
            raise InputError(f"{path} is a folder without corpus.jsonl (it holds: {listing}); give a BEIR folder or a file")
        return Corpus(beir, "jsonl", columns, batch_size, skip_invalid)
    if path.suffix in {".jsonl", ".ndjson"}:
        return Corpus(path, "jsonl", columns, batch_size, skip_invalid)
    with path.open("rb") as handle:
        head = handle.read(4)
    if head != b"PAR1":
        raise InputError(f"{path} is not a parquet file (no PAR1 header); give .parquet, .jsonl or a BEIR folder")
    return Corpus(path, "parquet", columns, batch_size, skip_invalid)


def _pick(wanted: str | None, candidates: tuple[str, ...], available: list[str], role: str, path: Path) -> str | None:
    if wanted is not None:
        if wanted not in available:
            raise InputError(
                f"{path} has no {role} column {wanted!r}; its columns are: {', '.join(available)} (choose one with --{role}-column)"
            )
        return wanted
    for name in candidates:
        if name in available:
            return name
    return None


def _to_documents(
    rows: list[dict[str, Any]],
    available: list[str],
    columns: CorpusColumns,
    path: Path,
    row_offset: int,
    seen: set[str],
    skips: dict[str, int] | None,
) -> pa.RecordBatch:
    """Rows → a batch in DOCUMENT_SCHEMA. ``skips`` None: refuse bad rows; else count and drop them."""
    id_column = _pick(columns.id, ("id", "_id"), available, "id", path)
    text_column = _pick(columns.text, ("text",), available, "text", path)
    title_column = _pick(columns.title, ("title",), available, "title", path)
    if id_column is None or text_column is None:
        role = "id" if id_column is None else "text"
        raise InputError(f"{path} has no {role} column; its columns are: {', '.join(available)} (choose one with --{role}-column)")
    known = {id_column, text_column, title_column}
    ids, titles, texts, metadata = [], [], [], []
    for position, row in enumerate(rows, start=row_offset):
        raw_id, text = row.get(id_column), row.get(text_column)
        where = f"{path} row {position}"
        title = row.get(title_column) if title_column else None
        title = None if title is None or _is_nan(title) else str(title)
        problem, message, doc_id = _row_problem(raw_id, text, title, where, seen)
        if problem:
            if skips is None:
                raise InputError(f"{message} (fix the row, or pass --skip-invalid to skip such rows)")
            skips[problem] = skips.get(problem, 0) + 1
            continue
        seen.add(doc_id)
        extra = {key: value for key, value in row.items() if key not in known}
        ids.append(doc_id)
        titles.append(title or None)
        texts.append(text or "")
        metadata.append(json.dumps(extra, default=str) if extra else None)
    return pa.RecordBatch.from_arrays(
        [pa.array(ids, pa.string()), pa.array(titles, pa.string()), pa.array(texts, pa.string()), pa.array(metadata, pa.string())],
        schema=DOCUMENT_SCHEMA,
    )


def _row_problem(raw_id: Any, text: Any, title: str | None, where: str, seen: set[str]) -> tuple[str | None, str, str]:
    """(problem kind or None, message, the checked id) for one row."""
    try:
        doc_id = check_id(raw_id)
    except InputError as exc:
        empty = raw_id is None or _is_nan(raw_id) or (isinstance(raw_id, str) and not raw_id.strip())
        return ("empty id" if empty else "bad id"), f"{where}: {exc}; every document needs a unique id (a string or an integer)", ""
    if doc_id in seen:
        return "duplicate id", f"{where}: duplicate id {doc_id!r}; ids must be unique", doc_id
    if text is not None and not isinstance(text, str):
        return "text not a string", f"{where} (id {doc_id!r}): the text is a {type(text).__name__}, not a string", doc_id
    if not document_text(title, text or ""):
        # A document with a title but no body (Cranfield has some) is still searchable.
        return "empty text", f"{where} (id {doc_id!r}): the text is {'null' if text is None else 'empty'}", doc_id
    return None, "", doc_id


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value
