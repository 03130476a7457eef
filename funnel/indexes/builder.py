"""Build an index folder from a corpus: encode once, write everything, rename into place.

Nothing is ever written into the final folder: the build happens in ``.NAME.partial`` beside it
and is renamed into place at the end, so an interrupted build leaves nothing that loads. The
partial folder keeps a checkpoint after every batch, so ``resume=True`` (``funnel index
--resume``) continues an interrupted build where it stopped and gives the same index as a build
that was never interrupted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from funnel.corpus import Corpus, check_batch_ids
from funnel.encoders.corpus_engine import CorpusEngine, corpus_encoder, parse_corpus_engine
from funnel.errors import FunnelError, IndexFormatError, InputError
from funnel.indexes import shortlist
from funnel.indexes.lock import LOCK_FILE, writer_lock
from funnel.indexes.manifest import (
    MANIFEST_FILE,
    Manifest,
    RotationEntry,
    ShortlistSpec,
    fsync_path,
    read_manifest,
    write_manifest_atomically,
)
from funnel.indexes.rotation import check_method as check_rotation
from funnel.indexes.segment import SegmentWriter
from funnel.layers import encode_corpus

if TYPE_CHECKING:
    from funnel.models import Encoder

VECTOR_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class IndexConfig:
    """How to build an index. ``shortlists`` empty means: one index of ``default_shortlist_kind`` at
    ``default_shortlist_dim`` (or the model's smallest trained dim).

    ``layers``: shallower depths whose vectors are stored as well (e.g. (2,) for the model cut
    after 2 layers), each with the same shortlists as the full model; documents still go through
    the encoder once, and the intermediate layers are taken on the way.

    ``rotation``: ``auto`` (fit the corpus's PCA rotation and keep it where its prefixes agree
    better with full-dim search than the model's own order), ``pca`` (always rotate) or ``none``
    (store the model's order); see :mod:`funnel.indexes.rotation`. Each depth gets its own.

    ``lexical``: keep a BM25 index of the documents beside the vectors (:mod:`funnel.indexes.lexical`),
    for plans that add lexical candidates (``64:400+bm25:50,full:10``); add, delete and compact
    keep it current.

    ``corpus_engine``: what encodes the documents on a CPU: ``auto`` races torch and the model's
    ONNX graph on the corpus's first texts and keeps the faster (:mod:`funnel.encoders.corpus_engine`),
    ``torch`` or ``onnx``. Stored layers always encode on torch.
    """

    shortlists: tuple[ShortlistSpec, ...] = ()
    vector_dtype: str = "float16"
    encode_batch_size: int = 64
    default_shortlist_dim: int = 64
    default_shortlist_kind: str = "flat"
    layers: tuple[int, ...] = ()
    rotation: str = "auto"
    lexical: bool = True
    corpus_engine: CorpusEngine = "auto"

    def __post_init__(self) -> None:
        check_rotation(self.rotation)
        parse_corpus_engine(self.corpus_engine)
        shortlist.make_spec(self.default_shortlist_dim, self.default_shortlist_kind)  # an unknown kind fails here, not after encoding
        if self.vector_dtype not in VECTOR_DTYPES:
            raise InputError(f"vector dtype {self.vector_dtype!r} is not supported: choose {' or '.join(VECTOR_DTYPES)}")
        if self.encode_batch_size < 1:
            raise InputError(f"batch size must be at least 1, not {self.encode_batch_size}")
        object.__setattr__(self, "layers", tuple(sorted(set(int(layer) for layer in self.layers))))

    def checked_layers(self, depth: int) -> tuple[int, ...]:
        """The stored layers, checked against a model of ``depth`` layers (full depth itself dropped)."""
        layers = tuple(layer for layer in self.layers if layer != depth)
        if layers and depth == 0:
            raise InputError("this model has no transformer layers (a static model?): drop --layers")
        bad = [layer for layer in layers if not 1 <= layer < depth]
        if bad:
            raise InputError(f"layers {bad} do not exist in this {depth}-layer model: choose layers 1..{depth}")
        return layers

    def resolved_shortlists(self, full_dim: int, model_metadata: dict[str, Any]) -> tuple[ShortlistSpec, ...]:
        specs = self.shortlists or (
            shortlist.make_spec(default_shortlist_dim(full_dim, model_metadata, self.default_shortlist_dim), self.default_shortlist_kind),
        )
        for spec in specs:
            shortlist.check_fits(spec, full_dim)
        return specs


def default_shortlist_dim(full_dim: int, model_metadata: dict[str, Any], fallback: int) -> int:
    """A model trained with nested dims shortlists at its smallest trained dim of at least 32."""
    trained = sorted(d for d in model_metadata.get("nested_dims", []) if 32 <= d < full_dim)
    return trained[0] if trained else min(fallback, full_dim)


Batches = Iterable[tuple[Any, ...]]
"""(documents, vectors) per batch, or (documents, vectors, {layer: vectors}) when layers are stored."""


def build_index(
    corpus: Corpus,
    encoder: Encoder,
    path: str | Path,
    config: IndexConfig = IndexConfig(),
    *,
    overwrite: bool = False,
    resume: bool = False,
    show_progress: bool = False,
) -> Path:
    """Encode ``corpus`` with ``encoder`` and write an index folder at ``path``; returns the path.

    ``resume``: continue an interrupted build of the same corpus with the same settings (rows
    already written are read but not encoded again).

    The corpus is validated in a first, cheap pass: a bad row stops the build before encoding.
    """
    corpus.validate()
    stat = corpus.path.stat()
    fingerprint = {
        "path": str(corpus.path.resolve()),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "columns": asdict(corpus.columns),
        "skip_invalid": corpus.skip_invalid,
    }
    source = {"path": str(corpus.path), "format": corpus.format, "skipped": corpus.skipped}
    depth = encoder_depth(encoder)
    layers = config.checked_layers(depth)
    return _build(
        lambda done: encode_corpus(
            corpus,
            encoder if layers else corpus_encoder(encoder, config.corpus_engine),
            layers,
            config.encode_batch_size,
            skip=done,
            total=corpus.validate(),
            show_progress=show_progress,
        ),
        Path(path).expanduser(),
        Manifest(
            model=encoder.name,
            dim=encoder.dim,
            vector_dtype=config.vector_dtype,
            shortlists=config.resolved_shortlists(encoder.dim, encoder.metadata),
            segments=(),
            model_metadata=encoder.metadata,
            source=source,
            depth=depth,
            layers=layers,
        ),
        fingerprint,
        overwrite=overwrite,
        resume=resume,
        keep=corpus.path,
        rotation=config.rotation,
        lexical=config.lexical,
        encoder=encoder,
    )


def encoder_depth(encoder: Encoder) -> int:
    """Transformer layers of the encoder's model; 0 for a model without layers (static)."""
    from funnel.models import num_layers

    model = getattr(encoder, "model", None)  # vectors made elsewhere come with no model
    return num_layers(model) if model is not None else 0


def write_index(
    batches: Batches,
    path: str | Path,
    *,
    model: str,
    dim: int,
    config: IndexConfig = IndexConfig(),
    model_metadata: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    depth: int = 0,
    overwrite: bool = False,
    resume: bool = False,
) -> Path:
    """Write an index from documents (in :data:`~funnel.corpus.DOCUMENT_SCHEMA`) with their
    normalized full vectors, e.g. vectors computed elsewhere; ``model`` names what made them.
    With ``config.layers``, each batch is (documents, vectors, {layer: vectors}) and ``depth``
    is the model's number of layers.

    ``resume``: continue an interrupted build; give the same batches from the start, and the rows
    already written are skipped.
    """
    metadata = model_metadata or {}
    manifest = Manifest(
        model=model,
        dim=dim,
        vector_dtype=config.vector_dtype,
        shortlists=config.resolved_shortlists(dim, metadata),
        segments=(),
        model_metadata=metadata,
        source=source or {},
        depth=depth,
        layers=config.checked_layers(depth),
    )
    return _build(
        lambda done: skip_rows(_checked(batches), done),
        Path(path).expanduser(),
        manifest,
        {},
        overwrite=overwrite,
        resume=resume,
        rotation=config.rotation,
        lexical=config.lexical,
    )


def _checked(batches: Batches) -> Iterator[tuple[Any, ...]]:
    for batch in batches:
        check_batch_ids(batch[0])
        yield batch


def check_output(target: Path, *, overwrite: bool, resume: bool, keep: Path | None = None) -> None:
    """Refuse, before any work, an output path a build may not write: one that exists without
    ``overwrite``, and anything but an index with it. ``--overwrite`` replaces an index (a folder
    holding a funnel manifest) and never an arbitrary file or folder; ``keep`` (the corpus) must
    not lie inside what would be replaced."""
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"cannot create {target}: {parent} is a file, not a folder; choose another --output")
            break
    if target.exists():
        if not overwrite:
            raise InputError(f"{target} already exists: choose another --output or pass --overwrite")
        if not target.is_dir() or not (target / MANIFEST_FILE).is_file():
            what = "a folder" if target.is_dir() else "a file"
            raise InputError(f"{target} is {what} but not a funnel index: --overwrite replaces only an index; choose another --output")
        try:
            read_manifest(target)  # a manifest of funnel's own, not any manifest.json
        except IndexFormatError as exc:
            raise InputError(f"{exc}: --overwrite replaces only a readable funnel index; remove {target} yourself if it is one") from None
        if keep is not None and keep.resolve().is_relative_to(target.resolve()):
            raise InputError(f"the corpus {keep} lies inside {target}, which --overwrite would replace: choose another --output")
    partial = partial_path(target)
    if partial.exists() and not (resume or overwrite):
        raise InputError(f"an interrupted build exists at {partial}: pass --resume to continue it or --overwrite to start over")


def partial_path(target: Path) -> Path:
    """Where a build of ``target`` writes until it is complete (kept after a crash, for resume)."""
    return target.parent / f".{target.name}.partial"


def _build(
    make_batches: Callable[[int], Batches],
    target: Path,
    template: Manifest,
    source_fingerprint: dict[str, Any],
    *,
    overwrite: bool,
    resume: bool,
    keep: Path | None = None,
    rotation: str = "none",
    lexical: bool = False,
    encoder: Encoder | None = None,
) -> Path:
    if target.is_symlink() and target.exists():
        target = target.resolve()  # --overwrite replaces the index the link names and keeps the link
    check_output(target, overwrite=overwrite, resume=resume, keep=keep)
    partial = partial_path(target)
    fingerprint = {
        "model": template.model,
        "dim": template.dim,
        "vector_dtype": template.vector_dtype,
        "shortlists": [asdict(spec) for spec in template.shortlists],
        "source": source_fingerprint,
    }
    if template.layers:
        fingerprint["layers"] = list(template.layers)
    if rotation != "none":
        fingerprint["rotation"] = rotation
    if lexical:
        fingerprint["lexical"] = True
    remove_retired(target)
    if (partial / RETIRED_MARK).exists():
        # A crash came between the exchange and the clean-up: the new index is in place and the
        # partial path holds the one it replaced. Finish the clean-up; resuming is then done.
        with writer_lock(partial):
            shutil.rmtree(partial)
        if resume and _holds_build(target, fingerprint):
            return target
    partial.mkdir(parents=True, exist_ok=True)
    with writer_lock(partial):
        try:
            if not resume:
                _clear(partial)
            if not (resume and _complete(partial, fingerprint)):
                _write_rows_and_finish(make_batches, partial, template, fingerprint, resume, rotation, lexical, encoder)
            _swap_into_place(partial, target)
        except FunnelError:
            # Bad input or settings in a fresh build: nothing worth resuming. A crash, Ctrl-C, a
            # full disk, or a refused --resume keeps the partial folder.
            if not resume:
                shutil.rmtree(partial, ignore_errors=True)
            raise
    return target


BUILD_FILE = ".build.json"
"""In a finished build (and the index it becomes): the fingerprint of the corpus and settings it
was built from, so that ``--resume`` installs a finished build only if it is the one asked for."""


def _holds_build(folder: Path, fingerprint: dict[str, Any]) -> bool:
    """Whether ``folder`` holds a finished build of exactly this corpus with these settings."""
    try:
        recorded = json.loads((folder / BUILD_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and recorded.get("fingerprint") == fingerprint and (folder / MANIFEST_FILE).is_file()


def _record_build(partial: Path, fingerprint: dict[str, Any]) -> None:
    temp = partial / (BUILD_FILE + ".tmp")
    with temp.open("w") as out:
        json.dump({"fingerprint": fingerprint}, out, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, partial / BUILD_FILE)


RETIRED = ".old-"
"""``.NAME.old-XXXXXXXX``: an index being replaced by ``--overwrite``, removed once the new one is in place."""
RETIRED_MARK = ".retired"
"""Written into an index just before ``--overwrite`` swaps it out: wherever it then lies (the
partial path, for an instant), it is known as the replaced index and never installed again."""


def remove_retired(target: Path) -> None:
    """Remove what an interrupted ``--overwrite`` left beside ``target``: folders named as funnel
    names the index it replaces (``.NAME.old-`` and mkdtemp's 8 characters), nothing else."""
    pattern = re.compile(re.escape(f".{target.name}{RETIRED}") + r"[a-z0-9_]{8}")
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        if pattern.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def _write_rows_and_finish(
    make_batches: Callable[[int], Batches],
    partial: Path,
    template: Manifest,
    fingerprint: dict[str, Any],
    resume: bool,
    rotation: str,
    lexical: bool,
    encoder: Encoder | None,
) -> None:
    from funnel.indexes.fitting import RotationFit
    from funnel.indexes.lexical import write_lexical

    (partial / MANIFEST_FILE).unlink(missing_ok=True)
    writer = SegmentWriter(
        partial / "seg-000000",
        template.dim,
        template.vector_dtype,
        layers=template.layers,
        checkpoint=fingerprint,
        resume=resume,
        deferred=rotation != "none",
    )
    try:
        for batch in make_batches(writer.count):
            writer.append(*batch)
    except BaseException:
        writer.abort()
        raise
    if writer.count == 0:
        raise InputError("no documents to index")
    fit = RotationFit(rotation, partial, template, encoder)
    entry = writer.finish(template.shortlists, fit if rotation != "none" else None)
    entry_rotation = fit.entry if rotation != "none" else RotationEntry(requested="none")
    manifest = replace(template, segments=(entry,), rotation=entry_rotation)
    if lexical:
        manifest = replace(manifest, lexical=write_lexical(partial, manifest))
    _record_build(partial, fingerprint)
    write_manifest_atomically(partial, manifest)
    writer.cleanup()


def _complete(partial: Path, fingerprint: dict[str, Any]) -> bool:
    """An interrupted build that had written its manifest: only the rename was left to do.

    It is installed only when it was built from this very corpus with these settings; any other
    finished folder at the partial path (another corpus, or an index an interrupted swap left
    there) is refused, never installed."""
    if not (partial / MANIFEST_FILE).exists():
        return False
    from funnel.indexes.index import Index

    try:
        manifest = Index.load(partial, use_gpu=False).manifest
    except IndexFormatError:
        return False
    if not _holds_build(partial, fingerprint):
        raise InputError(
            f"the interrupted build in {partial} was started with other settings or another corpus: pass --overwrite to start over"
        )
    for segment in manifest.segments:
        for working in (partial / segment.name).glob(".*"):
            working.unlink()
    return True


def _clear(partial: Path) -> None:
    for entry in partial.iterdir():
        if entry.name != LOCK_FILE:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def skip_rows(batches: Batches, skip: int) -> Iterator[tuple[Any, ...]]:
    """The batches without their first ``skip`` rows."""
    for batch in batches:
        documents = batch[0]
        if skip >= documents.num_rows:
            skip -= documents.num_rows
            continue
        if skip:
            batch = (documents.slice(skip), batch[1][skip:], *({k: v[skip:] for k, v in part.items()} for part in batch[2:]))
            skip = 0
        yield batch


def _swap_into_place(temp: Path, target: Path) -> None:
    if not target.exists():
        temp.rename(target)
        return
    with writer_lock(target):  # not under an add or delete of the index being replaced
        _continue_versions(temp, target)
        mark = target / RETIRED_MARK
        with mark.open("w") as out:
            os.fsync(out.fileno())
        fsync_path(target)  # the mark is on disk before the exchange can be
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}{RETIRED}", dir=target.parent))
        retired.rmdir()
        if _exchange(temp, target):
            temp.rename(retired)
        else:  # two renames: a reader may find no folder for an instant (Index.load waits for it)
            target.rename(retired)
            temp.rename(target)
    shutil.rmtree(retired, ignore_errors=True)


def _continue_versions(new: Path, old: Path) -> None:
    """Number the replacing index's version after the replaced one's: a client that caches by
    version must never see an old number come back for other contents."""
    try:
        previous = read_manifest(old).generation
    except IndexFormatError:
        return  # unreadable: nothing to continue from
    manifest = read_manifest(new)
    if manifest.generation <= previous:
        write_manifest_atomically(new, replace(manifest, generation=previous + 1))


def _exchange(first: Path, second: Path) -> bool:
    """Swap two folders in one atomic step (Linux renameat2 RENAME_EXCHANGE), so that readers
    of ``second`` see the old folder or the new one and never a missing one; False where the
    system cannot, leaving both in place."""
    import ctypes
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange)
    return result == 0
