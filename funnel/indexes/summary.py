"""What an index holds, as a plain dict: the data behind `funnel info` and a server's /info."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from funnel.indexes.manifest import Manifest, QueryEncoderEntry, read_manifest


def index_summary(path: str | Path) -> dict[str, Any]:
    """Model, size, shortlists, default plan and version of the index at ``path`` (reads the
    manifest and sizes the folder's files; opens no vectors)."""
    folder = Path(path)
    manifest = read_manifest(folder)
    disk = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return {"index": str(folder), **manifest_summary(manifest), "disk_bytes": disk}


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    """What :func:`index_summary` says that the manifest alone tells (no folder, no file sizes)."""
    return {
        "format_version": manifest.format_version,
        "documents": manifest.count,
        "segments": len(manifest.segments),
        "model": manifest.model,
        "dim": manifest.dim,
        "vector_dtype": manifest.vector_dtype,
        "shortlists": [s.__dict__ for s in manifest.shortlists],
        "plan": manifest.plan,
        "source": manifest.source,
        "deleted_rows": manifest.deleted,
        "generation": manifest.generation,
        "depth": manifest.depth,
        "layers": list(manifest.layers),
        "rotation": rotation_summary(manifest),
        "rotation_decision": manifest.rotation.decision if manifest.rotation else None,
        "lexical": {"kind": "bm25", "documents": manifest.lexical.documents} if manifest.lexical else None,
        "query_encoders": [query_encoder_summary(entry) for entry in manifest.query_encoders],
    }


QUERY_ENCODER_FIGURES = ("texts", "steps", "train_seconds", "held_out_cosine", "student_ms", "model_ms")


def query_encoder_summary(entry: QueryEncoderEntry) -> dict[str, Any]:
    """A stored query encoder: its name and kind, and how close it came to the model (no paths)."""
    return {"name": entry.name, "kind": entry.kind} | {key: entry.training[key] for key in QUERY_ENCODER_FIGURES if key in entry.training}


def without_paths(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with no filesystem path in it, for answers to clients: the corpus is named by
    its file name and a model given as a folder by the folder's name."""
    source = dict(summary.get("source") or {})
    if "path" in source:
        source["path"] = Path(source["path"]).name
    model = summary.get("model")
    shown_model = Path(model).name if isinstance(model, str) and ("/" in model or "\\" in model) else model
    return {key: value for key, value in summary.items() if key != "index"} | {"source": source, "model": shown_model}


def rotation_summary(manifest: Manifest) -> dict[str, Any]:
    """The basis an index stores its vectors in, per depth ("full", "2", ...), for --json."""
    rotation = manifest.rotation
    if rotation is None:
        return {"requested": None, "by_depth": {"full": "none"}, "note": "built before rotations: the model's order"}
    return {
        "requested": rotation.requested,
        "by_depth": {key: record.get("method", "none") for key, record in rotation.decision.items()} or {"full": "none"},
        "files": sorted(rotation.files),
    }
