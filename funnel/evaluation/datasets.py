"""Load evaluation data in BEIR layout: a corpus, queries and qrels for one split.

A BEIR folder holds ``corpus.jsonl`` (one ``{"_id", "title", "text"}`` object a line),
``queries.jsonl`` (``{"_id", "text"}``) and ``qrels/<split>.tsv``
(``query-id<TAB>corpus-id<TAB>score``). The files are parsed by :mod:`funnel.readers`, the one
reader of JSONL and BEIR files; every problem raises one ``InputError`` whose message names the
file, the line where there is one, what was expected, and what to do. Judgements that name a
query or document the folder does not hold are skipped and counted in ``BeirDataset.warnings``:
the library never prints, the caller decides what to show.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from funnel.errors import InputError
from funnel.readers import (
    CORPUS_FILE,
    QRELS_FOLDER,
    QUERIES_FILE,
    Qrels,
    document_text,
    examples,
    listing,
    load_qrels,
    load_queries,
    read_corpus,
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
        """Each document as :func:`funnel.readers.document_text` joins it: ``title + " " + text``."""
        return [document_text(title, text) for title, text in zip(self.corpus_titles, self.corpus_texts)]


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
    ids, titles, texts, warnings = read_corpus(folder / CORPUS_FILE)
    all_queries = load_queries(folder / QUERIES_FILE)
    raw_qrels = load_qrels(qrels_path)
    qrels, qrels_warnings = known_judgements(raw_qrels, all_queries, set(ids), qrels_path)
    warnings.extend(qrels_warnings)
    queries = {query_id: text for query_id, text in all_queries.items() if query_id in qrels}
    if not queries:
        raise InputError(
            f"{qrels_path}: none of the {len(all_queries)} queries in {QUERIES_FILE} is judged "
            f"in split {split!r} (qrels name queries such as {examples(raw_qrels)}, "
            f"{QUERIES_FILE} has {examples(all_queries)}); check the split and the query ids"
        )
    return BeirDataset(folder, split, ids, titles, texts, queries, qrels, warnings)


def _check_folder(folder: Path) -> None:
    """Fail with what is there when ``folder`` is not a BEIR folder with corpus and queries."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file; give the BEIR folder that holds {CORPUS_FILE}")
    if not folder.is_dir():
        parent = folder.parent
        where = f"{parent} holds: {listing(parent)}" if parent.is_dir() else f"{parent} does not exist either"
        raise InputError(f"no dataset folder at {folder}; {where}")
    for name in (CORPUS_FILE, QUERIES_FILE, QRELS_FOLDER):
        if not (folder / name).exists():
            raise InputError(
                f"{folder} has no {name} (it holds: {listing(folder)}); a BEIR folder needs "
                f"{CORPUS_FILE}, {QUERIES_FILE} and {QRELS_FOLDER}/<split>.tsv"
            )


def _qrels_path(folder: Path, split: str) -> Path:
    """The qrels file of ``split``, or an error listing the splits that exist."""
    qrels_folder = folder / QRELS_FOLDER
    path = qrels_folder / f"{split}.tsv"
    if not path.is_file():
        splits = sorted(p.stem for p in qrels_folder.glob("*.tsv") if p.is_file())
        found = ", ".join(splits) if splits else "none (no .tsv file)"
        raise InputError(f"{qrels_folder} has no split {split!r} ({split}.tsv); splits there: {found}")
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
            f"(such as {examples(unknown_queries)})"
        )
    if unknown_docs:
        warnings.append(
            f"{qrels_path}: skipped {sum(unknown_docs.values())} judgements of "
            f"{len(unknown_docs)} document ids not in {documents} "
            f"(such as {examples(unknown_docs)})"
        )
    lost = [query_id for query_id in qrels if query_id in queries and query_id not in kept]
    if lost:
        warnings.append(
            f"{qrels_path}: {len(lost)} queries lost every judgement to unknown document ids and are left out (such as {examples(lost)})"
        )
    return kept, warnings


__all__ = [
    "BeirDataset",
    "known_judgements",
    "load_beir",
]
