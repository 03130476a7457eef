"""The lexical index beside the vectors: BM25 over the live documents' title and text (bm25s).

A prefix shortlist misses the queries whose meaning rides on rare terms (package names, acronyms,
version strings): the rotation puts the directions of most corpus variance first, so a rare
topic's signal lands in the trailing dims. BM25 finds those documents by their terms, and a plan
stage such as ``64:400+bm25:50`` adds its top 50 to the dense shortlist before the exact rescoring
(:mod:`funnel.search.run`).

Layout: a folder ``lexical-GGGGGG`` (the generation that wrote it) holding bm25s's saved files
(the sparse score matrix, the vocabulary, the parameters) and ``positions.npy``: the index
position of each BM25 document, so deleted rows are never in it. Every file is listed with its
checksum in the manifest (:class:`~funnel.indexes.manifest.LexicalEntry`) and checked on load like
the others. The folder is written under a temporary name and renamed into place before the
manifest that names it, and never changes after; every add, delete and compact writes a new one
over the live documents, so its statistics (document frequencies, average length) are those of a
fresh build of the same documents.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from funnel.corpus import document_text
from funnel.errors import IndexFormatError
from funnel.indexes.manifest import DOCUMENTS_FILE, FileEntry, LexicalEntry, Manifest, file_entry, fsync_path
from funnel.indexes.segment import live_mask, read_documents

STOPWORDS = "en"
"""bm25s's English stopword list, for documents and queries alike."""
POSITIONS_FILE = "positions.npy"
PARAMS_FILE = "params.index.json"
"""bm25s's parameters file: absent where no document holds a term (no matrix was written)."""
BATCH_ROWS = 50_000

# bm25s logs its own progress bars and notices: the caller's progress says what happens.
logging.getLogger("bm25s").setLevel(logging.WARNING)


def lexical_name(generation: int) -> str:
    return f"lexical-{generation:06d}"


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Lower-cased word tokens of two or more characters, English stopwords dropped: the one
    tokenizer documents and queries share."""
    import bm25s

    return bm25s.tokenize(list(texts), stopwords=STOPWORDS, show_progress=False, return_ids=False)


def write_lexical(folder: Path, manifest: Manifest) -> LexicalEntry:
    """Build BM25 over the live documents ``manifest`` lists in ``folder`` and write it as
    ``lexical-<generation>`` (replacing a leftover of a crashed write of that name, which only
    funnel makes); returns its manifest entry."""
    import bm25s

    name = lexical_name(manifest.generation)
    temp = folder / f".{name}.tmp"
    shutil.rmtree(temp, ignore_errors=True)
    shutil.rmtree(folder / name, ignore_errors=True)  # no manifest names it yet: a crashed write's
    try:
        texts, positions = _live_texts(folder, manifest)
        ids, vocabulary = _token_ids(tokenize(texts))
        temp.mkdir()
        if vocabulary:  # no term at all (every document deleted, or only stopwords): no matrix, no candidates
            retriever = bm25s.BM25()
            retriever.index((ids, vocabulary), show_progress=False)
            retriever.save(str(temp))
        np.save(temp / POSITIONS_FILE, positions)
        for path in temp.iterdir():
            fsync_path(path)
        files = {path.name: file_entry(path) for path in sorted(temp.iterdir())}
        temp.rename(folder / name)
        fsync_path(folder)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return LexicalEntry(name=name, documents=len(positions), files=files)


def _token_ids(documents: list[list[str]]) -> tuple[list[list[int]], dict[str, int]]:
    """Token ids over a sorted vocabulary: bm25s numbers tokens in set order, which changes with
    the process's hash seed, and the same documents must give the same files (a resumed build
    equals an uninterrupted one, byte for byte)."""
    vocabulary = {token: number for number, token in enumerate(sorted({t for tokens in documents for t in tokens}))}
    return [[vocabulary[t] for t in tokens] for tokens in documents], vocabulary


def _live_texts(folder: Path, manifest: Manifest) -> tuple[list[str], np.ndarray]:
    texts: list[str] = []
    positions: list[np.ndarray] = []
    for offset, entry, live in _live_rows(folder, manifest):
        documents = read_documents(folder / entry / DOCUMENTS_FILE)
        for start in range(0, documents.num_rows, BATCH_ROWS):
            part = documents.slice(start, BATCH_ROWS)
            keep = live[start : start + part.num_rows]
            titles, bodies = part.column("title").to_pylist(), part.column("text").to_pylist()
            texts.extend(document_text(t, b) for t, b, kept in zip(titles, bodies, keep) if kept)  # what the model encodes
            positions.append(np.flatnonzero(keep) + offset + start)
    return texts, np.concatenate(positions).astype(np.int64) if positions else np.zeros(0, np.int64)


def _live_rows(folder: Path, manifest: Manifest) -> Iterator[tuple[int, str, np.ndarray]]:
    """(first position, segment name, live mask) per segment."""
    tombstones = {t.segment: t for t in manifest.tombstones}
    offset = 0
    for entry in manifest.segments:
        yield offset, entry.name, live_mask(folder, tombstones.get(entry.name), entry.count)
        offset += entry.count


@dataclass(eq=False)
class LexicalIndex:
    """The BM25 index of one index version: ``search`` gives index positions, best first.

    Its files are checked with the index's when it loads; bm25s (and scipy) are imported and
    the files opened only when a plan first needs them, so an index whose searches never name
    ``+bm25:N`` opens as fast as one without."""

    where: Path
    entry: LexicalEntry
    rows: int
    """Stored rows of the index: every BM25 document's position is below it."""
    _parts: tuple[Any | None, np.ndarray] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, folder: Path, entry: LexicalEntry, manifest: Manifest) -> LexicalIndex:
        return cls(folder / entry.name, entry, manifest.rows)

    @property
    def retriever(self) -> Any | None:
        """bm25s's retriever; None where no document holds a term."""
        return self._read()[0]

    @property
    def positions(self) -> np.ndarray:
        """The index position of each BM25 document (live documents only)."""
        return self._read()[1]

    def check(self) -> None:
        """Open every part now: IndexFormatError where one does not match the manifest."""
        self._read()

    def _read(self) -> tuple[Any | None, np.ndarray]:
        if self._parts is None:
            with self._lock:
                if self._parts is None:
                    self._parts = self._load()
        return self._parts

    def _load(self) -> tuple[Any | None, np.ndarray]:
        import bm25s

        try:
            # Memory-mapped like the vectors: the files never change once written.
            retriever = bm25s.BM25.load(str(self.where), mmap=True, load_corpus=False) if PARAMS_FILE in self.entry.files else None
            positions = np.load(self.where / POSITIONS_FILE, allow_pickle=False)
        except (OSError, ValueError, KeyError) as exc:
            raise IndexFormatError(f"{self.where} is not a readable lexical index ({exc}); rebuild the index") from None
        documents = int(retriever.scores.get("num_docs", -1)) if retriever is not None else self.entry.documents
        wrong_positions = positions.dtype != np.int64 or positions.shape != (self.entry.documents,)
        if wrong_positions or documents != self.entry.documents or (len(positions) and positions.max() >= self.rows):
            raise IndexFormatError(f"{self.where / POSITIONS_FILE} does not match the manifest; rebuild the index")
        return retriever, positions

    def word_rarity(self, words: Sequence[str]) -> np.ndarray:
        """Per word, the document frequency of its rarest token; inf for a word without one
        the corpus holds (a stopword, punctuation)."""
        out = np.full(len(words), np.inf)
        retriever = self.retriever
        if retriever is None:
            return out
        # A token's documents are its column of the sparse score matrix: indptr's steps.
        frequencies = np.diff(retriever.scores["indptr"])
        vocabulary = retriever.vocab_dict
        for number, tokens in enumerate(tokenize(words)):
            found = [int(frequencies[t]) for t in (vocabulary.get(token, -1) for token in tokens) if 0 <= t < len(frequencies)]
            found = [f for f in found if f > 0]
            if found:
                out[number] = float(min(found))
        return out

    def search(self, texts: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
        """BM25's top ``n`` per query text, only documents sharing a term with it, ties by lower
        position: (scores (q, n) float32, positions (q, n) int64), padded with 0 / -1."""
        scores = np.zeros((len(texts), n), np.float32)
        positions = np.full((len(texts), n), -1, np.int64)
        retriever = self.retriever
        if retriever is None or not len(texts):
            return scores, positions
        vocabulary = retriever.vocab_dict
        for row, tokens in enumerate(tokenize(texts)):
            # Scored straight from the sparse matrix: bm25s's retrieve starts a thread pool and
            # progress bars per call, which cost more than scoring one short query.
            ids = [vocabulary[token] for token in tokens if token in vocabulary]
            if not ids:
                continue
            document_scores = retriever.get_scores_from_ids(ids)
            matched = np.flatnonzero(document_scores > 0)
            if len(matched) > n:
                matched = matched[np.argpartition(-document_scores[matched], n - 1)[:n]]
            found = document_scores[matched]
            order = np.lexsort((matched, -found))
            scores[row, : len(order)] = found[order]
            positions[row, : len(order)] = self.positions[matched[order]]
        return scores, positions


def lexical_files(folder: Path, entry: LexicalEntry) -> Iterator[tuple[Path, FileEntry]]:
    """(path, expected entry) of each file of the lexical index, for the integrity check."""
    for name, expected in entry.files.items():
        yield folder / entry.name / name, expected
