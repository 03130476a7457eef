"""The index manifest: what an index folder holds, in one JSON file that is replaced atomically.

Layout of an index folder::

    NAME/
      manifest.json            this file's dataclasses, serialized
      .lock                    taken (flock) by a writer: add, delete, compact
      seg-000000/              an immutable segment
        documents.arrow        Arrow IPC file: id, title, text, metadata (memory-mapped on load)
        vectors.f16            raw row-major full-dimension vectors (float16 or float32)
        shortlist-d64.faiss    a FAISS index over the first 64 dims, re-normalized
      vectors-l2.f16         (only with stored layers) vectors of the model cut after 2 layers
      shortlist-l2-d64.faiss (likewise) a FAISS index over their first 64 dims
      seg-000000.deleted-000003.npy   rows of seg-000000 deleted as of generation 3 (int64, sorted)
      rotation.f32             (only when rotated) the orthogonal dim×dim float32 rotation the
                               vectors and shortlists are stored in; rotation-l2.f32 for layer 2
      lexical-000003/          (only with a lexical index) BM25 over the live documents as of
                               generation 3: see funnel.indexes.lexical
      query-static-000004/     (only with query encoders) the engine files of a query encoder
                               named "static", stored at generation 4: see
                               funnel.indexes.query_encoders

Segments never change once written; anything that changes the index writes new files and then
swaps the manifest, so a reader holding the old manifest keeps a consistent view. Every file is
listed with its size and sha256, and the manifest carries the sha256 of its own content, so an
edited or damaged manifest (tombstones dropped, a rotation removed) is refused instead of read.
Names in the manifest must be the names funnel writes: a segment called ``../x`` never loads
anything from outside the folder. See :mod:`funnel.indexes.integrity` for what loading checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from funnel.checksums import file_sha256
from funnel.errors import IndexFormatError, InputError

FORMAT_NAME = "funnel-index"
FORMAT_VERSION = 4  # 4: the manifest's own checksum; 3: a stored rotation; 2: generation, tombstones, sampled digests
CHECKSUMMED_VERSION = 4
"""From this version on a manifest must carry its checksum: one without it was edited."""
MANIFEST_FILE = "manifest.json"
DOCUMENTS_FILE = "documents.arrow"
MANIFEST_MAX_BYTES = 64 << 20
"""A manifest lists files, not data: anything larger is not one (and is never read whole)."""

SEGMENT_NAME = re.compile(r"^seg-\d{6}$")
TOMBSTONE_NAME = re.compile(r"^seg-\d{6}\.deleted-\d{6}\.npy$")
ROTATION_NAME = re.compile(r"^rotation(-l\d+)?\.f32$")
LEXICAL_NAME = re.compile(r"^lexical-\d{6}$")
QUERY_ENCODER_FOLDER = re.compile(r"^query-[a-z][a-z0-9-]*-\d{6}$")
ENCODER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
"""A query encoder's name: lower-case letters, digits and dashes, starting with a letter."""
RESERVED_NAMES = ("full", "bm25", "rrf")
"""Words a plan's stages use (:mod:`funnel.search.plan`), which no query encoder may be called."""
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""Files inside a segment: plain names, never a path."""


def vectors_file(dtype: str) -> str:
    return "vectors.f16" if dtype == "float16" else "vectors.f32"


def shortlist_file(dim: int, layer: int | None = None) -> str:
    return f"shortlist-d{dim}.faiss" if layer is None else f"shortlist-l{layer}-d{dim}.faiss"


def layer_vectors_file(dtype: str, layer: int) -> str:
    """Vectors of the sub-model that stops after ``layer`` transformer layers (full width)."""
    return f"vectors-l{layer}.{'f16' if dtype == 'float16' else 'f32'}"


SAMPLE_BYTES = 65_536


@dataclass(frozen=True)
class FileEntry:
    """A file's size, full sha256 and the sha256 of its first and last 64 KiB (checked on load)."""

    bytes: int
    sha256: str
    sample_sha256: str | None = None


@dataclass(frozen=True)
class ShortlistSpec:
    """A FAISS index over the first ``dim`` dims: ``kind`` is one of :data:`funnel.indexes.shortlist.KINDS`."""

    dim: int
    kind: str = "flat"
    params: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SegmentEntry:
    name: str
    count: int
    files: dict[str, FileEntry]


@dataclass(frozen=True)
class TombstoneEntry:
    """Deleted rows of one segment: ``name`` is an .npy file of sorted local row numbers."""

    segment: str
    name: str
    count: int
    file: FileEntry


@dataclass(frozen=True)
class RotationEntry:
    """How the stored vectors relate to the model's: ``files`` the stored rotations by file name
    (``rotation.f32`` for the full model, ``rotation-lL.f32`` for layer L; none when every depth
    keeps the model's order), ``requested`` what the build asked for (auto, pca or none) and
    ``decision`` per depth ("full", "2", ...) the method chosen with the figures behind it."""

    requested: str
    files: dict[str, FileEntry] = field(default_factory=dict)
    decision: dict[str, Any] = field(default_factory=dict)

    @property
    def rotated(self) -> bool:
        return bool(self.files)


@dataclass(frozen=True)
class LexicalEntry:
    """The BM25 index of the live documents: the folder ``name``, the ``documents`` it holds and
    its ``files`` by name (see :mod:`funnel.indexes.lexical`)."""

    name: str
    documents: int
    files: dict[str, FileEntry] = field(default_factory=dict)


@dataclass(frozen=True)
class QueryEncoderEntry:
    """A query encoder trained into the model's space, which plans name by ``name``: its engine
    files lie in the folder ``folder`` (a graph folder, :mod:`funnel.encoders.graph_cache`),
    listed in ``files``; ``kind`` says what the student is (``static``, ``layers-2``) and
    ``training`` how it was made and how close it came to the model (see
    :mod:`funnel.indexes.query_encoders`)."""

    name: str
    folder: str
    kind: str
    files: dict[str, FileEntry] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)


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
    tombstones: tuple[TombstoneEntry, ...] = ()
    generation: int = 0
    """Bumped by every change (add, delete, compact): names new files and tells versions apart."""
    depth: int = 0
    """Transformer layers of the model (0: unknown, or a model without layers)."""
    layers: tuple[int, ...] = ()
    """Shallower depths whose vectors are stored too (each with the same shortlists as full depth)."""
    rotation: RotationEntry | None = None
    """The rotation the vectors are stored in; None for an index built before rotations (model order)."""
    lexical: LexicalEntry | None = None
    """The BM25 index beside the vectors; None for an index built without one (or before them)."""
    query_encoders: tuple[QueryEncoderEntry, ...] = ()
    """Cheap query encoders trained into the model's space, which a plan's stages may name."""
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    """The version read (an older index keeps its number in memory); every write is the current one."""

    @property
    def rows(self) -> int:
        """Stored rows, deleted ones included: positions run 0..rows-1."""
        return sum(segment.count for segment in self.segments)

    @property
    def deleted(self) -> int:
        return sum(entry.count for entry in self.tombstones)

    @property
    def count(self) -> int:
        """Live documents: stored rows minus deleted ones."""
        return self.rows - self.deleted

    def referenced(self) -> set[str]:
        """Top-level names in the index folder this manifest needs."""
        rotations = set(self.rotation.files) if self.rotation else set()
        lexical = {self.lexical.name} if self.lexical else set()
        students = {entry.folder for entry in self.query_encoders}
        return {MANIFEST_FILE} | {s.name for s in self.segments} | {t.name for t in self.tombstones} | rotations | lexical | students

    def query_encoder(self, name: str) -> QueryEncoderEntry | None:
        return next((entry for entry in self.query_encoders if entry.name == name), None)

    def to_json(self) -> str:
        data = asdict(self)
        data["count"] = self.count
        data["format_version"] = FORMAT_VERSION
        if not self.layers:  # indexes without layer vectors keep the manifest they always had
            data.pop("layers")
            data.pop("depth")
        if self.rotation is None:  # an index from before rotations keeps the manifest it had
            data.pop("rotation")
        if self.lexical is None:  # likewise an index without a lexical index
            data.pop("lexical")
        if not self.query_encoders:  # and one without query encoders
            data.pop("query_encoders")
        data = json.loads(json.dumps(data))  # the checksum covers what a reader will parse (int keys become strings)
        data["checksum"] = content_checksum(data)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: Path) -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IndexFormatError(f"{where} is not valid JSON ({exc.msg}); the index is damaged: rebuild it") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise IndexFormatError(f"{where} is not a funnel index manifest")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise IndexFormatError(f"{where} has format version {version}, newer than this funnel reads ({FORMAT_VERSION}): upgrade funnel")
        _check_checksum(data, version, where)
        try:
            manifest = cls(
                model=data["model"],
                dim=int(data["dim"]),
                vector_dtype=data["vector_dtype"],
                shortlists=tuple(ShortlistSpec(**spec) for spec in data["shortlists"]),
                segments=tuple(
                    SegmentEntry(s["name"], int(s["count"]), {n: FileEntry(**f) for n, f in s["files"].items()}) for s in data["segments"]
                ),
                model_metadata=data.get("model_metadata", {}),
                plan=data.get("plan"),
                source=data.get("source", {}),
                normalized=bool(data.get("normalized", True)),
                tombstones=tuple(
                    TombstoneEntry(t["segment"], t["name"], int(t["count"]), FileEntry(**t["file"])) for t in data.get("tombstones", [])
                ),
                generation=int(data.get("generation", 0)),
                depth=int(data.get("depth", 0)),
                layers=tuple(int(layer) for layer in data.get("layers", ())),
                rotation=_rotation(data.get("rotation")),
                lexical=_lexical(data.get("lexical")),
                query_encoders=tuple(_query_encoder(entry) for entry in data.get("query_encoders", ())),
                format_version=version,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"{where} is missing or has a bad field ({exc}); the index is damaged: rebuild it") from None
        _check_names(manifest, where)
        return manifest


def content_checksum(data: dict[str, Any]) -> str:
    """sha256 of a manifest's content (its JSON without the checksum, keys sorted, compact): the
    same however the file is indented."""
    content = {key: value for key, value in data.items() if key != "checksum"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _check_checksum(data: dict[str, Any], version: int, where: Path) -> None:
    stored = data.get("checksum")
    if stored is None and version < CHECKSUMMED_VERSION:
        return  # written before manifests carried a checksum
    if stored != content_checksum(data):
        raise IndexFormatError(
            f"{where} does not match its own checksum: the manifest was edited or damaged; "
            "restore it from a copy or rebuild the index (funnel never reads a manifest it cannot trust)"
        )


def _check_names(manifest: Manifest, where: Path) -> None:
    """Every name the manifest lists must be one funnel writes: nothing outside the folder, ever."""
    names = [(segment.name, SEGMENT_NAME) for segment in manifest.segments]
    names += [(name, FILE_NAME) for segment in manifest.segments for name in segment.files]
    names += [(tomb.name, TOMBSTONE_NAME) for tomb in manifest.tombstones] + [(tomb.segment, SEGMENT_NAME) for tomb in manifest.tombstones]
    names += [(name, ROTATION_NAME) for name in (manifest.rotation.files if manifest.rotation else {})]
    if manifest.lexical is not None:
        names += [(manifest.lexical.name, LEXICAL_NAME)] + [(name, FILE_NAME) for name in manifest.lexical.files]
    for entry in manifest.query_encoders:
        names += [(entry.folder, QUERY_ENCODER_FOLDER)] + [(name, FILE_NAME) for name in entry.files]
    for name, rule in names:
        if not isinstance(name, str) or not rule.fullmatch(name):
            raise IndexFormatError(f"{where} lists {name!r}, which is not a name funnel writes; the manifest is damaged: rebuild the index")


def _rotation(data: dict[str, Any] | None) -> RotationEntry | None:
    if data is None:
        return None
    return RotationEntry(
        requested=str(data["requested"]),
        files={name: FileEntry(**f) for name, f in data.get("files", {}).items()},
        decision=dict(data.get("decision", {})),
    )


def _lexical(data: dict[str, Any] | None) -> LexicalEntry | None:
    if data is None:
        return None
    return LexicalEntry(
        name=str(data["name"]), documents=int(data["documents"]), files={name: FileEntry(**f) for name, f in data["files"].items()}
    )


def check_encoder_name(name: object) -> str:
    """``name`` when a query encoder may be called so, else InputError saying why."""
    if not isinstance(name, str) or not ENCODER_NAME.fullmatch(name) or name in RESERVED_NAMES:
        raise InputError(
            f"{name!r} is not a query encoder name: use up to 32 lower-case letters, digits and dashes, "
            f"starting with a letter, other than {', '.join(RESERVED_NAMES)} (e.g. static)"
        )
    return name


def _query_encoder(data: dict[str, Any]) -> QueryEncoderEntry:
    return QueryEncoderEntry(
        name=str(data["name"]),
        folder=str(data["folder"]),
        kind=str(data["kind"]),
        files={name: FileEntry(**f) for name, f in data["files"].items()},
        training=dict(data.get("training", {})),
    )


def read_manifest(index_path: Path) -> Manifest:
    return read_manifest_stamped(index_path)[0]


def read_manifest_stamped(index_path: Path) -> tuple[Manifest, tuple[int, ...]]:
    """The manifest and the identity (inode, mtime, size) of the very file it was read from."""
    if not index_path.exists():
        raise IndexFormatError(f"{index_path} does not exist: build it with `funnel index CORPUS -o {index_path}`")
    if not index_path.is_dir():
        raise IndexFormatError(f"{index_path} is a file, not an index folder: give the folder `funnel index` wrote")
    where = index_path / MANIFEST_FILE
    try:
        data, stamp = read_regular_file(where, MANIFEST_MAX_BYTES)
    except FileNotFoundError:
        raise IndexFormatError(f"{index_path} is not a funnel index (no {MANIFEST_FILE}); build one with `funnel index`") from None
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise IndexFormatError(f"cannot read {where} ({reason}): give this process read access to the index") from None
    return Manifest.from_json(data.decode("utf-8", errors="replace"), where), stamp


def read_regular_file(path: Path, max_bytes: int) -> tuple[bytes, tuple[int, ...]]:
    """The bytes of ``path`` and its identity, refusing anything but a regular file of at most
    ``max_bytes``: a FIFO, a device (a link to /dev/urandom) or a folder would hang or flood a reader.
    Opened non-blocking, so that opening a FIFO returns at once instead of waiting for a writer."""
    handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise IndexFormatError(f"{path} is not a regular file (a folder, FIFO or device?); the index is damaged: rebuild it")
        if info.st_size > max_bytes:
            raise IndexFormatError(f"{path} holds {info.st_size} bytes, more than any {path.name} funnel writes; the index is damaged")
        with os.fdopen(handle, "rb", closefd=False) as reader:
            data = reader.read(max_bytes + 1)
    finally:
        os.close(handle)
    return data, _stamp(info)


def manifest_stamp(index_path: Path) -> tuple[int, ...]:
    """Changes whenever the manifest is replaced (each write renames a new file into place)."""
    return _stamp(os.stat(index_path / MANIFEST_FILE))


def _stamp(stat: os.stat_result) -> tuple[int, ...]:
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def write_manifest_atomically(index_path: Path, manifest: Manifest) -> None:
    """Write then rename, so a reader sees the old manifest or the new one, never half of one."""
    handle, temp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=index_path)
    # mkstemp makes the file private (0600); the manifest must be as readable as the files it lists.
    os.fchmod(handle, new_file_mode())
    with os.fdopen(handle, "w") as out:
        out.write(manifest.to_json())
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, index_path / MANIFEST_FILE)
    fsync_path(index_path)


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file under the process's umask (0o666 & ~umask)."""
    try:  # Linux states the umask without changing it (os.umask would race other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o644


def fsync_path(path: Path) -> None:
    """Flush a file's data, or make a rename inside a folder durable (a crash of the machine, not
    only of the process)."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def file_entry(path: Path) -> FileEntry:
    return FileEntry(bytes=path.stat().st_size, sha256=file_sha256(path), sample_sha256=sample_digest(path))


def sample_digest(path: Path) -> str:
    """sha256 of the first and last 64 KiB (the whole file when smaller): cheap enough for every load."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if size <= 2 * SAMPLE_BYTES:
            digest.update(handle.read())
        else:
            digest.update(handle.read(SAMPLE_BYTES))
            handle.seek(size - SAMPLE_BYTES)
            digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()


def check_file(path: Path, expected: FileEntry, *, full: bool = False) -> None:
    """Raise IndexFormatError naming ``path`` when it is missing, truncated or altered.

    The fast check compares the size and the sampled digest; ``full`` also hashes every byte.
    """
    if not path.is_file():
        raise IndexFormatError(f"{path} is missing; the index is damaged: rebuild it")
    size = path.stat().st_size
    if size != expected.bytes:
        raise IndexFormatError(
            f"{path} holds {size} bytes but the manifest says {expected.bytes}; the file is truncated or altered: rebuild the index"
        )
    altered = IndexFormatError(f"{path} does not match its checksum in the manifest; the file is altered or damaged: rebuild the index")
    if expected.sample_sha256 is not None and sample_digest(path) != expected.sample_sha256:
        raise altered
    if full and file_entry(path).sha256 != expected.sha256:
        raise altered
