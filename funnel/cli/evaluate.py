"""`funnel eval DATASET`: quality, compute and speed of funnel configurations against exact search."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from funnel.cli.output import emit_json, writing


def eval_command(
    dataset: Optional[Path] = typer.Argument(None, help="A BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."),
    index: Optional[Path] = typer.Option(None, "--index", help="Evaluate an existing index instead (with --queries and --qrels)."),
    queries: Optional[Path] = typer.Option(None, "--queries", help='Queries JSONL ({"_id", "text"}) for --index.'),
    qrels: Optional[Path] = typer.Option(None, "--qrels", help="Qrels TSV (query-id, corpus-id, score) or TREC qrels for --index."),
    split: str = typer.Option("test", help="Qrels split of the dataset (qrels/<split>.tsv)."),
    model: Optional[str] = typer.Option(None, help="Model folder.", show_default="the index's, else the offline all-MiniLM-L6-v2"),
    dims: Optional[str] = typer.Option(None, "--dims", help="Shortlist dims to sweep.", show_default="16,32,64,128,256"),
    shortlist: Optional[str] = typer.Option(None, "--shortlist", help="Shortlist sizes to sweep.", show_default="50,100,200,500"),
    stages: list[str] = typer.Option(
        [], "--stages", help="A plan to add: its stages, e.g. 32:500,128:100,full:100 (repeat for several; alone: no grid)."
    ),
    k: Optional[int] = typer.Option(None, "-k", help="Documents each ranking returns.", show_default="the largest metric cutoff"),
    metrics: str = typer.Option("ndcg@10,mrr@10,recall@10,recall@100,map@100", help="Metrics; the first one ranks the Pareto frontier."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Folder for report.json, per_query.json, report.md, report.png.", show_default="evaluations/<dataset>"
    ),
    shortlist_kind: str = typer.Option(
        "flat",
        help="Kind of the shortlists built in memory for swept dims: flat, hnsw, ivf, binary, sq8, hnsw-sq8, pq-fastscan, ivf-pq-fastscan or opq-fastscan.",
    ),
    layers: Optional[str] = typer.Option(
        None,
        "--layers",
        help="Also sweep shortlists at these depths (the model cut after that many layers), e.g. 2,3 (LAYER:DIM:N,full:K); reports query-encoding cost per stage.",
    ),
    repeats: int = typer.Option(3, help="Times each query is searched for timing (its median is kept)."),
    encode_sample: int = typer.Option(50, help="Queries whose encoding is timed (a seeded sample)."),
    query_encoder: str = typer.Option(
        "auto", help="Engine for the queries: auto (the model's ONNX graph, else torch), onnx, onnx-int8 or torch."
    ),
    embeddings_cache: Optional[Path] = typer.Option(
        None,
        "--embeddings-cache",
        help="Folder of precomputed embeddings (python -m benchmarks.embed_cache); a sample is re-encoded to check them.",
    ),
    index_dir: Path = typer.Option(Path("indexes"), "--index-dir", help="Where the dataset's index is built once and reused."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the dataset's index even if one exists."),
    rotation: str = typer.Option(
        "auto", "--rotation", help="The dataset index's rotation (see funnel index): auto, pca or none; one built otherwise is rebuilt."
    ),
    no_plot: bool = typer.Option(False, "--no-plot", help="Skip the PNG (no matplotlib needed)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON (without per-query values) instead of the table."),
) -> None:
    """Evaluate funnel plans on a dataset: NDCG, MRR, recall and MAP against the compute spent."""
    from funnel.encoders.choose import parse_engine
    from funnel.errors import InputError
    from funnel.evaluation.harness import EvalOptions, evaluate
    from funnel.evaluation.sweep import parse_sizes
    from funnel.indexes.index import Index

    source: Path | Index
    if dataset is not None and index is None:
        source = dataset
    elif index is not None and dataset is None:
        source = Index.load(index)
    else:
        raise InputError("give a BEIR dataset folder, or an existing index with --queries and --qrels, not both")
    options = EvalOptions(
        dims=parse_sizes(dims, "--dims") if dims else None,
        shortlists=parse_sizes(shortlist, "--shortlist") if shortlist else None,
        plans=tuple(stages),
        layers=parse_sizes(layers, "--layers") if layers else (),
        metrics=tuple(m for m in metrics.split(",") if m.strip()),
        k=k,
        queries=queries,
        qrels=qrels,
        split=split,
        index_dir=index_dir,
        rebuild=rebuild,
        embeddings_cache=embeddings_cache,
        shortlist_kind=shortlist_kind,
        rotation=rotation,
        repeats=repeats,
        encode_sample=encode_sample,
        query_encoder=parse_engine(query_encoder),
        command="funnel " + shlex.join(sys.argv[1:]),
    )
    report = evaluate(
        source,
        model=model,
        options=options,
        progress=None if quiet or json_output else (lambda line: typer.echo(line, err=True)),
    )
    folder = output or Path("evaluations") / report.dataset["name"]
    with writing(folder):
        paths = report.write(folder)
        if not no_plot:
            from funnel.evaluation.plot import plot_report

            paths["png"] = plot_report(report, folder / "report.png")
    if json_output:
        emit_json(report.to_json(per_query=False) | {"files": {kind: str(path) for kind, path in paths.items()}})
        return
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(report.terminal_table(), nl=False)
    if not quiet:
        typer.echo(f"every metric and cost: {paths['markdown']}; wrote {', '.join(str(path) for path in paths.values())}", err=True)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
