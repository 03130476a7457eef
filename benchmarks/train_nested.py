"""Train a nested-embedding model with funnel and measure it on Cranfield at every (layer, dim).

Writes benchmarks/results/training/TAG.json (figures, config, machine, versions, command) and
TAG.md (the table). NDCG@10 by exact cosine search over title + " " + text, by
:mod:`funnel.evaluation.metrics` (trec_eval's ``ndcg_cut_10``, checked against pytrec_eval); the
base all-MiniLM-L6-v2 scores 0.3817 at 384 dims.

    python -m benchmarks.train_nested --tag matryoshka --scheme matryoshka --max-minutes 25
    python -m benchmarks.train_nested --tag starbucks --scheme starbucks --max-minutes 11
    python -m benchmarks.train_nested --tag static --static distill --static-dim 256 --batch-size 2048 --lr 0.2

Datasets come from ``$FUNNEL_DATA`` or ``../shared/data``; models are written to ``--models-dir``
(default ``../models`` beside the repository).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks import common

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

BENCHMARK = "train_nested"
SHARED = common.DATA
RESULTS = common.RESULTS / "training"
CRANFIELD = common.DATASETS["cranfield"]
Grid = list[tuple[int, int]]
"""(layer, dim) pairs to evaluate."""


@dataclass(frozen=True)
class EvalData:
    """Cranfield as the figures are computed on it: documents as ``title + " " + text``, the
    judged queries, the qrels."""

    doc_ids: list[str]
    docs: list[str]
    query_ids: list[str]
    queries: list[str]
    qrels: dict[str, dict[str, int]]

    @classmethod
    def load(cls) -> EvalData:
        data = CRANFIELD.load()
        return cls(data.corpus_ids, data.passages(), list(data.queries), list(data.queries.values()), data.qrels)


def ndcg_at_10(
    query_vectors: np.ndarray, query_ids: list[str], doc_vectors: np.ndarray, doc_ids: list[str], qrels: dict[str, dict[str, int]]
) -> float:
    """Mean NDCG@10 over judged queries (:func:`benchmarks.common.ndcg`); rows L2-normalized, exact cosine, top 100 kept."""
    judged = [row for row, query_id in enumerate(query_ids) if query_id in qrels]
    scores = query_vectors[judged] @ doc_vectors.T
    top = np.argpartition(-scores, 100, axis=1)[:, :100]
    return common.ndcg([query_ids[row] for row in judged], top, np.take_along_axis(scores, top, axis=1), doc_ids, qrels)


def dimension(model: SentenceTransformer) -> int:
    """The model's embedding dimension (sentence-transformers says None only for a model without one)."""
    dim = model.get_embedding_dimension()
    if dim is None:
        raise SystemExit("the model states no embedding dimension")
    return dim


def encode_layers(model: SentenceTransformer, texts: list[str], layers: list[int], batch_size: int = 64) -> dict[int, np.ndarray]:
    """Embeddings of the first L layers for each L in ``layers``, one transformer pass per batch.

    Static models (no layers) return {0: model.encode(texts)}.
    """
    import torch

    from funnel.training.losses import layer_features, num_layers, pool_layer
    from funnel.vectors import normalize

    if num_layers(model) == 0:
        return {0: model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)}
    model.eval()
    order = np.argsort([-len(t) for t in texts])  # length-sorted batches pad less
    out = {layer: np.zeros((len(texts), dimension(model)), dtype=np.float32) for layer in layers}
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            index = order[start : start + batch_size]
            features = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in model.preprocess([texts[i] for i in index]).items()}
            hidden = layer_features(model, features)
            for layer in layers:
                out[layer][index] = pool_layer(model, hidden, layer).float().cpu().numpy()
    return {layer: normalize(v) for layer, v in out.items()}


def evaluate(
    model: SentenceTransformer, grid: Grid, data: EvalData, cached: tuple[np.ndarray, np.ndarray] | None = None
) -> dict[str, float]:
    """NDCG@10 at each (layer, dim) of ``grid``; ``cached`` full-model (query, doc) vectors skip encoding."""
    from funnel.vectors import truncate

    layers = sorted({layer for layer, _ in grid})
    if cached is not None:
        q_by_layer, d_by_layer = {layers[-1]: cached[0]}, {layers[-1]: cached[1]}
    else:
        q_by_layer, d_by_layer = encode_layers(model, data.queries, layers), encode_layers(model, data.docs, layers)
    return {
        f"{layer}:{dim}": round(
            ndcg_at_10(truncate(q_by_layer[layer], dim), data.query_ids, truncate(d_by_layer[layer], dim), data.doc_ids, data.qrels), 4
        )
        for layer, dim in grid
    }


def base_cache(doc_ids: list[str], query_ids: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """The base model's cached (query, doc) vectors of Cranfield (``benchmarks.embed_cache``), when they hold exactly these ids."""
    from funnel.errors import InputError

    try:
        corpus, queries = CRANFIELD.embeddings("corpus"), CRANFIELD.embeddings("queries")
    except (InputError, FileNotFoundError):
        return None
    return (queries.vectors, corpus.vectors) if corpus.ids == doc_ids and queries.ids == query_ids else None


def encode_speed(model: SentenceTransformer, texts: list[str], batch_size: int, repeats: int = 3) -> float:
    """Passages per second (best of ``repeats``) encoding ``texts``."""

    def encode(batch: list[str]) -> object:
        return model.encode(batch, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)

    return len(texts) / float(common.time_calls(encode, [texts], rounds=repeats).wall.min())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", required=True, help="results file name and model folder name")
    parser.add_argument("--model", help="model folder to start from (default: the offline all-MiniLM-L6-v2)")
    parser.add_argument(
        "--fold-rotation",
        type=Path,
        help="an index built with the model: start from the model with its rotation folded in (then also report it untrained)",
    )
    parser.add_argument("--models-dir", type=Path, default=common.REPO.parent / "models")
    parser.add_argument(
        "--data", type=Path, nargs="+", default=[SHARED / "train" / "debian-pairs.jsonl", SHARED / "train" / "scifact-train-pairs.jsonl"]
    )
    parser.add_argument("--scheme", default="matryoshka", choices=["matryoshka", "2d", "starbucks", "none"])
    parser.add_argument("--static", choices=["tokenizer", "distill"])
    parser.add_argument("--static-dim", type=int, default=1024)
    parser.add_argument("--dims", help="comma-separated, e.g. 384,256,128,64,32")
    parser.add_argument("--dim-weights", help="comma-separated, one per dim")
    parser.add_argument("--pairs", help="layer:dim list, e.g. 1:16,2:32,3:64,4:128,5:256,6:384")
    parser.add_argument("--pair-weights")
    parser.add_argument("--loss", default="mnrl")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--frozen-layers", type=int, default=0)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--max-pairs", type=int)
    parser.add_argument("--max-minutes", type=float, help="training wall-clock budget (stops cleanly)")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--eval-only", action="store_true", help="evaluate an existing --tag model")
    parser.add_argument("--eval-dims", default="32,64,128,384")
    parser.add_argument("--grid", help="layer:dim pairs to evaluate (default: the trained ones plus --eval-dims)")
    parser.add_argument("--no-base", action="store_true", help="skip the base model's figures")
    return parser.parse_args()


def ints(text: str | None) -> tuple[int, ...] | None:
    return tuple(int(x) for x in text.split(",")) if text else None


def floats(text: str | None) -> tuple[float, ...] | None:
    return tuple(float(x) for x in text.split(",")) if text else None


def pairs(text: str) -> Grid:
    """``"1:16,2:32"`` → [(1, 16), (2, 32)]."""
    out = []
    for part in text.split(","):
        layer, dim = part.split(":")
        out.append((int(layer), int(dim)))
    return out


def train_model(args: argparse.Namespace, output: Path) -> None:
    from funnel.training import TrainConfig, train

    config = TrainConfig(
        data=tuple(args.data),
        output=output,
        model=args.model,
        fold_rotation=args.fold_rotation,
        static=args.static,
        static_dim=args.static_dim,
        scheme=args.scheme,
        dims=ints(args.dims),
        dim_weights=floats(args.dim_weights),
        layer_dim_pairs=tuple(pairs(args.pairs)) if args.pairs else None,
        pair_weights=floats(args.pair_weights),
        loss=args.loss,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        max_seq_length=args.seq_len,
        frozen_layers=args.frozen_layers,
        epochs=args.epochs,
        max_steps=args.max_steps,
        max_pairs=args.max_pairs,
        max_minutes=args.max_minutes,
        seed=args.seed,
        show_progress=False,
        extra={"log_every": 10},
    )
    train(config)


def grids(args: argparse.Namespace, metadata: dict[str, Any], depth: int, width: int, base_width: int) -> tuple[Grid, Grid]:
    """The (layer, dim) pairs to evaluate the trained and the base model at."""
    eval_dims = ints(args.eval_dims) or ()
    grid: Grid
    if metadata.get("scheme") in ("2d", "starbucks"):
        grid = sorted({(int(p[0]), int(p[1])) for p in metadata["layer_dim_pairs"]} | {(depth, d) for d in eval_dims})
    else:
        grid = [(depth, d) for d in eval_dims if d <= width] + ([(depth, width)] if width not in eval_dims else [])
    base_grid = [(6, d) for d in eval_dims if d <= base_width]
    if metadata.get("scheme") in ("2d", "starbucks"):
        base_grid = grid  # base model with layers cut: the "no nested training" reference
    if args.grid:
        grid = base_grid = pairs(args.grid)
    return grid, base_grid


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from funnel.models import default_model_path, load_model, read_model_metadata
    from funnel.training.losses import num_layers

    output = args.models_dir / args.tag
    started = time.time()
    if not args.eval_only:
        train_model(args, output)
    metadata = read_model_metadata(output)

    data = EvalData.load()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = load_model(args.model or default_model_path(), device=device)
    trained = load_model(output, device=device)
    depth, width = num_layers(trained), dimension(trained)
    grid, base_grid = grids(args, metadata, depth, width, dimension(base))
    cached = base_cache(data.doc_ids, data.query_ids) if all(layer == 6 for layer, _ in base_grid) else None
    results = {"base": {} if args.no_base else evaluate(base, base_grid, data, cached), "trained": evaluate(trained, grid, data)}
    if args.fold_rotation is not None:  # where training started: the base with the index's rotation, untrained
        from funnel.training.trainer import fold_rotation

        fold_rotation(base, args.fold_rotation)
        results["base_rotated"] = evaluate(base, grid, data)
    speed = None
    if depth == 0:
        speed = {
            "static_passages_per_s": round(encode_speed(trained, data.docs, 2048), 1),
            "minilm_passages_per_s": round(encode_speed(base, data.docs, 64, repeats=1), 1),
            "passages": len(data.docs),
        }
        speed["ratio"] = round(speed["static_passages_per_s"] / speed["minilm_passages_per_s"], 1)

    record = {
        "tag": args.tag,
        "model_folder": common.shown(output),
        "metadata": _without_paths({k: v for k, v in metadata.items() if k != "loss_log"}),
        "loss_first_last": [metadata["loss_log"][0], metadata["loss_log"][-1]] if metadata.get("loss_log") else None,
        "ndcg@10": results,
        "encode_speed": speed,
        "seconds_total": round(time.time() - started, 1),
    }
    result = common.Result.make(BENCHMARK, common.parameters(args), record, common.machine(torch_threads=torch.get_num_threads()))
    common.write_result(RESULTS / f"{args.tag}.json", result)
    (RESULTS / f"{args.tag}.md").write_text(_markdown(result))
    print(_markdown(result))


def _without_paths(metadata: dict[str, Any]) -> dict[str, Any]:
    """The model's metadata with its data and base-model paths as result files record paths."""
    out = dict(metadata)
    if isinstance(out.get("trained_on"), list):
        out["trained_on"] = [common.shown(path) for path in out["trained_on"]]
    if isinstance(out.get("base_model"), str) and out["base_model"].startswith("/"):
        out["base_model"] = common.shown(out["base_model"])
    return out


def _markdown(result: common.Result) -> str:
    record = result.results
    base, trained = record["ndcg@10"]["base"], record["ndcg@10"]["trained"]
    full_key = max(trained, key=lambda k: tuple(int(x) for x in k.split(":")))
    lines = [
        f"# {record['tag']}: NDCG@10 on Cranfield by (layer, dim)",
        "",
        f"`{result.command}`",
        "",
        f"scheme {record['metadata'].get('scheme')}, {record['metadata'].get('steps')} steps, "
        f"{record['metadata'].get('train_pairs')} pairs, {record['metadata'].get('train_seconds')} s training",
        "",
    ]
    rotated = record["ndcg@10"].get("base_rotated")
    if rotated:
        lines += [
            "| layer:dim | base all-MiniLM-L6-v2 | base, index rotation folded in (the start) | trained | trained / trained full | start / its full |",
            "|---|---|---|---|---|---|",
        ]
        for key in sorted(set(base) | set(trained), key=lambda k: tuple(int(x) for x in k.split(":"))):
            b, r, t = base.get(key), rotated.get(key), trained.get(key)
            share = f"{t / trained[full_key]:.1%}" if t is not None else ""
            start = f"{r / rotated[full_key]:.1%}" if r is not None else ""
            lines.append(
                f"| {key} | {b if b is not None else ''} | {r if r is not None else ''} | {t if t is not None else ''} | {share} | {start} |"
            )
    else:
        lines += ["| layer:dim | base all-MiniLM-L6-v2 | trained | trained / trained full |", "|---|---|---|---|"]
        for key in sorted(set(base) | set(trained), key=lambda k: tuple(int(x) for x in k.split(":"))):
            b, t = base.get(key), trained.get(key)
            share = f"{t / trained[full_key]:.1%}" if t is not None else ""
            lines.append(f"| {key} | {b if b is not None else ''} | {t if t is not None else ''} | {share} |")
    if record["encode_speed"]:
        s = record["encode_speed"]
        lines += [
            "",
            f"Encode speed, {s['passages']} Cranfield passages, same run: static {s['static_passages_per_s']}/s, "
            f"MiniLM {s['minilm_passages_per_s']}/s ({s['ratio']}x).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
