"""The index manifest: what an index folder holds, in one JSON file that is replaced atomically.

Layout of an index folder::

    NAME/
      manifest.json            this file's dataclasses, serialized
      seg-000000/              an immutable segment
        documents.arrow        Arrow IPC file: id, title, text, metadata (memory-mapped on load)
        vectors.f16            raw row-major full-dimension vectors (float16 or float32)
        shortlist-d64.faiss    a FAISS index over the first 64 dims, re-normalized

Segments never change once written; anything that changes the index writes new files and then
swaps the manifest, so a reader holding the old manifest keeps a consistent view.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from funnel.errors import IndexFormatError

FORMAT_NAME = "funnel-index"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
DOCUMENTS_FILE = "documents.arrow"


def vectors_file(dtype: str) -> str:
    return "vectors.f16" if dtype == "float16" else "vectors.f32"


def shortlist_file(dim: int) -> str:
    return f"shortlist-d{dim}.faiss"


@dataclass(frozen=True)
class FileEntry:
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ShortlistSpec:
    """A FAISS index over the first ``dim`` dims: ``kind`` is flat, hnsw, ivf or binary."""

    dim: int
    kind: str = "flat"
    params: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SegmentEntry:
    name: str
    count: int
    files: dict[str, FileEntry]


@dataclass(frozen=True)
class Manifest:
    model: str
    dim: int
    vector_dtype: str
    shortlists: tuple[ShortlistSpec, ...]
    segments: tuple[SegmentEntry, ...]
    model_metadata: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    normalized: bool = True
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    @property
    def count(self) -> int:
        return sum(segment.count for segment in self.segments)

    def to_json(self) -> str:
        data = asdict(self)
        data["count"] = self.count
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: Path) -> "Manifest":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IndexFormatError(f"{where} is not valid JSON ({exc.msg}); the index is damaged: rebuild it") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise IndexFormatError(f"{where} is not a funnel index manifest")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise IndexFormatError(
                f"{where} has format version {version}, newer than this funnel reads ({FORMAT_VERSION}): upgrade funnel"
            )
        try:
            return cls(
                model=data["model"],
                dim=int(data["dim"]),
                vector_dtype=data["vector_dtype"],
                shortlists=tuple(ShortlistSpec(**spec) for spec in data["shortlists"]),
                segments=tuple(
                    SegmentEntry(s["name"], int(s["count"]), {n: FileEntry(**f) for n, f in s["files"].items()})
                    for s in data["segments"]
                ),
                model_metadata=data.get("model_metadata", {}),
                plan=data.get("plan"),
                source=data.get("source", {}),
                normalized=bool(data.get("normalized", True)),
                format_version=version,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"{where} is missing or has a bad field ({exc}); the index is damaged: rebuild it") from None


def read_manifest(index_path: Path) -> Manifest:
    if not index_path.exists():
        raise IndexFormatError(f"{index_path} does not exist: build it with `funnel index CORPUS -o {index_path}`")
    where = index_path / MANIFEST_FILE
    if not where.exists():
        raise IndexFormatError(f"{index_path} is not a funnel index (no {MANIFEST_FILE}); build one with `funnel index`")
    return Manifest.from_json(where.read_text(), where)


def write_manifest_atomically(index_path: Path, manifest: Manifest) -> None:
    """Write then rename, so a reader sees the old manifest or the new one, never half of one."""
    handle, temp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=index_path)
    with os.fdopen(handle, "w") as out:
        out.write(manifest.to_json())
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, index_path / MANIFEST_FILE)


def file_entry(path: Path) -> FileEntry:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return FileEntry(bytes=path.stat().st_size, sha256=digest.hexdigest())
