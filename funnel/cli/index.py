"""`funnel index CORPUS`: encode a corpus once and write an index folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from funnel.cli.output import emit_json, human_bytes, rotation_lines, writing

if TYPE_CHECKING:
    from funnel.backends.ray_build import RayOptions
    from funnel.corpus import Corpus


def index_command(
    corpus: Path = typer.Argument(..., help="A .parquet file, a .jsonl file or a BEIR folder (corpus.jsonl)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Index folder.", show_default="indexes/<corpus name>"),
    model: Optional[str] = typer.Option(None, help="Model folder.", show_default="the offline all-MiniLM-L6-v2"),
    id_column: Optional[str] = typer.Option(None, help="Id column.", show_default="id, else _id"),
    text_column: Optional[str] = typer.Option(None, help="Text column.", show_default="text"),
    title_column: Optional[str] = typer.Option(None, help="Optional title column, prepended to the text.", show_default="title if present"),
    shortlist_dim: list[int] = typer.Option(
        [],
        "--shortlist-dim",
        "-d",
        help="Dims of a shortlist index (repeat for several).",
        show_default="64, or the model's smallest trained dim",
    ),
    shortlist_kind: str = typer.Option(
        "flat",
        "--shortlist-kind",
        "--shortlist-index",
        help="Shortlist index kind: flat, hnsw, ivf, binary, or quantized: sq8, hnsw-sq8, pq-fastscan, ivf-pq-fastscan, "
        "opq-fastscan, model-pq-fastscan (a quarter to a sixteenth of flat's bytes; later stages rescore exactly; "
        "model-pq-fastscan, full dims only, is FAISS's IndexRefine(PQ…x4fs) configuration and the fastest at one query per call).",
    ),
    layers: Optional[str] = typer.Option(
        None,
        help="Also store the vectors of the model cut after these layers, e.g. 2,3 (each with the same shortlists), for stages like 2:64:200,6:384:10.",
    ),
    dtype: str = typer.Option("float16", help="Storage type of the full vectors: float16 or float32."),
    rotation: str = typer.Option(
        "auto",
        help="Store vectors in the corpus's PCA rotation, so short prefixes shortlist better (full-dim scores unchanged): "
        "auto (rotate unless the model's own order nests as well, measured on queries made from the corpus), pca or none.",
    ),
    lexical: bool = typer.Option(
        True,
        "--lexical/--no-lexical",
        help="Keep a BM25 index of the documents beside the vectors, for plans that add lexical candidates "
        "(64:400+bm25:50,full:10: rare terms, names, versions); add, delete and compact keep it current.",
    ),
    batch_size: int = typer.Option(64, help="Encoding batch size."),
    corpus_encoder: str = typer.Option(
        "auto",
        help="What encodes the documents on a CPU: auto (torch and the model's ONNX graph raced on the corpus's first "
        "texts, the faster kept), torch or onnx.",
    ),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Skip rows with no text or a repeated id (keeping the first) instead of stopping."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing index (or an interrupted build) at the output path."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted build of the same corpus from its last checkpoint."),
    ray: bool = typer.Option(
        False, "--ray", help="Encode with Ray (parquet file or folder of shards): a local Ray, or the cluster at --ray-address."
    ),
    ray_address: Optional[str] = typer.Option(
        None, help="Ray cluster address (e.g. ray://head:10001 or auto).", show_default="start a local Ray"
    ),
    workers: Optional[int] = typer.Option(None, help="Ray encoder actors.", show_default="one per GPU, else 2"),
    backend: str = typer.Option("local", help="Where the index goes: local (an index folder) or qdrant (a collection, see --qdrant)."),
    qdrant: Optional[str] = typer.Option(None, help="With --backend qdrant: a Qdrant http(s)://HOST:PORT, or a folder for embedded mode."),
    collection: Optional[str] = typer.Option(None, help="With --backend qdrant: the collection.", show_default="the corpus name"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Encode CORPUS and write an index: documents, full vectors and FAISS shortlist indexes."""
    from funnel.corpus import CorpusColumns, open_corpus
    from funnel.encoders.corpus_engine import parse_corpus_engine
    from funnel.indexes.builder import IndexConfig, build_index
    from funnel.indexes.index import Index
    from funnel.indexes.shortlist import make_spec
    from funnel.indexes.summary import rotation_summary
    from funnel.models import Encoder

    columns = CorpusColumns(id=id_column, text=text_column, title=title_column)
    ray_options = _ray_options(ray, ray_address, workers)
    source: Corpus
    if ray_options is not None:  # a parquet file or a folder of parquet shards
        from funnel.backends.ray_build import sharded_corpus

        source = sharded_corpus(corpus, columns, skip_invalid)
    else:
        source = open_corpus(corpus, columns, skip_invalid=skip_invalid)
    target = output or Path("indexes") / (corpus.stem if corpus.is_file() else corpus.resolve().name)
    from funnel.evaluation.sweep import parse_sizes

    config = IndexConfig(
        shortlists=tuple(make_spec(d, shortlist_kind) for d in shortlist_dim),
        default_shortlist_kind=shortlist_kind,
        vector_dtype=dtype,
        encode_batch_size=batch_size,
        corpus_engine=parse_corpus_engine(corpus_encoder),
        layers=parse_sizes(layers, "--layers") if layers else (),
        rotation=rotation,
        lexical=lexical,
    )
    from funnel.indexes.builder import check_output

    if backend != "local":
        from funnel.cli.index_qdrant import index_to_qdrant

        return index_to_qdrant(
            source, config, backend, qdrant, collection or target.name, model, ray_options, overwrite, resume, quiet, json_output
        )
    check_output(target, overwrite=overwrite, resume=resume, keep=source.path)  # before the slow model load
    started = time.perf_counter()
    source.validate()  # before the model loads: a bad row costs a second, not an encoding run
    encoder = Encoder.load(model)
    with writing(target):
        if ray_options is not None:
            from funnel.backends.ray_build import build_with_ray

            path = build_with_ray(source, encoder, target, config, ray_options, overwrite=overwrite)  # type: ignore[arg-type]
        else:
            path = build_index(
                source, encoder, target, config, overwrite=overwrite, resume=resume, show_progress=not quiet and not json_output
            )
    from funnel.encoders.choose import prepare_query_graph

    graph = prepare_query_graph(encoder)  # once per model: later searches start without torch
    index = Index.load(path)
    disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    summary: dict[str, Any] = {
        "index": str(path),
        "documents": index.count,
        "model": index.manifest.model,
        "dim": index.dim,
        "shortlists": [{"dim": s.dim, "kind": s.kind} for s in index.manifest.shortlists],
        "layers": list(index.layers),
        "depth": index.depth,
        "rotation": rotation_summary(index.manifest),
        "query_encoder": "onnx" if graph else "torch",
        "lexical": index.manifest.lexical is not None,
        "disk_bytes": disk,
        "seconds": round(time.perf_counter() - started, 2),
        "skipped": dict(source.skipped),
    }
    if json_output:
        emit_json(summary)
    else:
        dims = ", ".join(f"{s['dim']}-d {s['kind']}" for s in summary["shortlists"])
        if source.skipped:
            reasons = ", ".join(f"{count} {reason}" for reason, count in source.skipped.items())
            typer.echo(f"skipped {sum(source.skipped.values())} rows ({reasons})", err=True)
        stored = f"; layers {', '.join(map(str, index.layers))} and {index.depth}" if index.layers else ""
        lexical_note = "; bm25" if summary["lexical"] else ""
        typer.echo(
            f"indexed {index.count} documents into {path} ({human_bytes(disk)}; shortlist {dims}{stored}{lexical_note}; {summary['seconds']} s)"
        )
        for line in rotation_lines(index.manifest):
            typer.echo(f"  {line}")


def _ray_options(ray: bool, address: Optional[str], workers: Optional[int]) -> RayOptions | None:
    if not ray:
        if address or workers:
            from funnel.errors import InputError

            raise InputError("--ray-address and --workers go with --ray")
        return None
    from funnel.backends.ray_build import RayOptions

    return RayOptions(address=address, workers=workers, env={"TOKENIZERS_PARALLELISM": "false"})


def register(app: typer.Typer) -> None:
    app.command("index")(index_command)
