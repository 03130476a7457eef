"""Helpers for the index storage tests (a module, not conftest, so imports are unambiguous)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def folder_files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".lock"}


def unit_rows(count: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class HashEncoder:
    """A stand-in model: a text's vector is a function of its text only, so runs are comparable."""

    name, dim, metadata = "hash-encoder", 32, {}

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls, self.texts, self.fail_on_call = 0, 0, fail_on_call

    def encode(self, texts, batch_size=64):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt  # like Ctrl-C: the build stops, its partial folder stays
        self.texts += len(texts)
        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little") for t in texts]
        vectors = np.stack([np.random.default_rng(s).normal(size=self.dim) for s in seeds]).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
