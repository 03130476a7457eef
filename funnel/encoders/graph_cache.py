"""Where exported ONNX graphs live: one folder per model under ``$FUNNEL_CACHE/onnx`` (default
``$XDG_CACHE_HOME/funnel``, else ``~/.cache/funnel``), named by a fingerprint of the model folder.

The fingerprint hashes the graph format and each model file's relative path, size and
modification time: a stat per file, so a cold ``funnel search`` finds its graph without reading
the model's weights, and a changed model or a new exporter gets a new graph. A graph folder is written beside its final name and renamed into
place, so a reader sees a whole graph or none; its files carry their sha256, checked on load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from funnel.checksums import file_sha256
from funnel.errors import ModelError

CACHE_VARIABLE = "FUNNEL_CACHE"
# 2: attention exported in eager form and fused by ONNX Runtime's transformer optimizer.
GRAPH_FORMAT = 2
META_FILE = "graph.json"
Precision = Literal["fp32", "int8"]
GRAPH_FILES: dict[Precision, str] = {"fp32": "model.onnx", "int8": "model-int8.onnx"}
TOKENIZER_FILE = "tokenizer.json"
STATIC_FILE = "embeddings.npy"  # a static model's token table (funnel.encoders.static_engine)


def cache_root() -> Path:
    configured = os.environ.get(CACHE_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "funnel"


def model_fingerprint(model_path: Path) -> str:
    digest = hashlib.sha256(f"funnel-onnx-graph {GRAPH_FORMAT}\n".encode())
    for file in sorted(p for p in model_path.rglob("*") if p.is_file()):
        info = file.stat()
        digest.update(f"{file.relative_to(model_path).as_posix()}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def graph_folder(model_path: Path, depth: int | None = None) -> Path:
    """The model's graph folder; with ``depth``, the folder of the graph of the model cut after
    that many layers (for stages that name a layer)."""
    name = model_fingerprint(model_path)
    return cache_root() / "onnx" / (name if depth is None else f"{name}-layers-{depth}")


@dataclass(frozen=True)
class GraphMeta:
    """What a graph folder holds: the model it came from, its shape, and each file's sha256."""

    model: str
    dim: int
    max_seq_length: int
    inputs: tuple[str, ...]
    files: dict[str, str]  # file name -> sha256
    kind: str = "onnx"  # "onnx": a graph for ONNX Runtime; "static": a static model's token table
    fused: tuple[str, ...] = ()  # the fused operators ONNX Runtime's transformer optimizer put in the graph
    depth: int | None = None  # the model cut after this many transformer layers (None: the whole model)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "funnel-onnx-graph",
            "format_version": GRAPH_FORMAT,
            "model": self.model,
            "dim": self.dim,
            "max_seq_length": self.max_seq_length,
            "inputs": list(self.inputs),
            "files": self.files,
            "kind": self.kind,
            "fused": list(self.fused),
            "depth": self.depth,
        }

    @classmethod
    def read(cls, folder: Path) -> GraphMeta:
        try:
            raw = json.loads((folder / META_FILE).read_text())
            if raw.get("format") != "funnel-onnx-graph" or raw.get("format_version") != GRAPH_FORMAT:
                raise ValueError(f"format {raw.get('format')!r} version {raw.get('format_version')!r}")
            return cls(
                raw["model"],
                int(raw["dim"]),
                int(raw["max_seq_length"]),
                tuple(raw["inputs"]),
                dict(raw["files"]),
                raw.get("kind", "onnx"),
                tuple(raw.get("fused", ())),
                None if raw.get("depth") is None else int(raw["depth"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"the ONNX graph at {folder} is unreadable ({exc}): delete the folder and it is exported again") from exc

    def check(self, folder: Path, name: str) -> Path:
        """The path of ``name``, after checking its bytes against the recorded sha256."""
        path = folder / name
        expected = self.files.get(name)
        if expected is None or not path.is_file():
            raise ModelError(f"the ONNX graph at {folder} lacks {name}: delete the folder and it is exported again")
        if file_sha256(path) != expected:
            raise ModelError(f"{path} does not match its checksum (damaged): delete {folder} and it is exported again")
        return path


def refusal_file(folder: Path) -> Path:
    """Where a model with no faithful export is recorded, beside its would-be graph folder."""
    return folder.parent / f"{folder.name}.not-exportable.json"


def recorded_refusal(folder: Path) -> str | None:
    """Why this model's export failed before (so it is not retried on every search), or None.
    A record from another graph format (an exporter that may do better) does not count."""
    try:
        raw = json.loads(refusal_file(folder).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or raw.get("format_version") != GRAPH_FORMAT:
        return None
    return f"{raw.get('reason')} (recorded in {refusal_file(folder)}; delete it to try again)"


def record_refusal(folder: Path, reason: str) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    target = refusal_file(folder)
    temp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    temp.write_text(json.dumps({"format_version": GRAPH_FORMAT, "reason": reason}))
    os.replace(temp, target)


def write_meta(folder: Path, meta: GraphMeta) -> None:
    """Write the folder's graph.json (whole or not at all)."""
    temp = folder / f".{META_FILE}.tmp-{os.getpid()}"
    temp.write_text(json.dumps(meta.to_json(), indent=2))
    os.replace(temp, folder / META_FILE)


def publish(staging: Path, folder: Path) -> None:
    """Rename a finished ``staging`` folder into place; when another process got there first,
    keep theirs (the same model gives the same graph) and drop ours."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staging, folder)
    except OSError:
        if not (folder / META_FILE).exists():
            raise
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def staged(folder: Path) -> Iterator[Path]:
    """A fresh folder beside ``folder`` to write a graph into: renamed into place
    (:func:`publish`) when the block ends, removed if it raises."""
    staging = staging_folder(folder)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, folder)


def staging_folder(folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging
