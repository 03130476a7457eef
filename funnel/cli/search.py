"""`funnel search INDEX "query"`: top-k hits through the funnel."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from funnel.cli.output import emit_json, snippet


def search_command(
    index: Path = typer.Argument(..., help="An index folder made by `funnel index` (with --server: the served index's name)."),
    query: Optional[str] = typer.Argument(None, help="The query; omit it to read queries from --queries."),
    k: Optional[int] = typer.Option(None, "-k", help="Hits per query.", show_default="10, or the last stage's candidates with --stages"),
    shortlist: Optional[int] = typer.Option(None, help="Candidates the first stage keeps.", show_default="max(200, 20k)"),
    stages: Optional[str] = typer.Option(
        None,
        help="The plan, its stages in order, e.g. 64:200,128:50,full:10 (DIM:CANDIDATES, LAYER:DIM:CANDIDATES or "
        "ENCODER:DIM:CANDIDATES, ENCODER a query encoder the index stores; DIM may be 'full').",
    ),
    queries: Optional[Path] = typer.Option(None, "--queries", help="File with one query per line ('-' for stdin)."),
    model: Optional[str] = typer.Option(None, help="Model folder.", show_default="the one the index was built with"),
    query_encoder: str = typer.Option(
        "auto", help="Engine for the queries: auto (the model's ONNX graph, else torch), onnx, onnx-int8 or torch."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print hits as JSON."),
    server: Optional[str] = typer.Option(
        None, "--server", help="Ask a `funnel serve` server at this URL (http://HOST:PORT) instead of loading the index."
    ),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="With --server: environment variable holding the server's key."),
) -> None:
    """Search an index with one query, or many from a file or stdin."""
    from funnel.encoders.choose import parse_engine
    from funnel.errors import InputError
    from funnel.indexes.index import Index
    from funnel.remote import RemoteRetriever
    from funnel.retriever import Retriever, check_queries, choose_plan, index_query_encoder
    from funnel.search.plan import Plan, resolve_k
    from funnel.search.run import check_once

    engine = parse_engine(query_encoder)
    texts = _queries(query, queries)
    check_queries(texts)
    if stages and shortlist:
        raise InputError("give either --stages or --shortlist, not both")
    given = Plan.parse(stages) if stages else None  # the one parse of --stages
    k = resolve_k(k, given)
    retriever: Retriever | RemoteRetriever
    plan: Plan | None
    if server:
        retriever = _remote(server, index, model, api_key_env)
        plan = given or (Plan.two_stage(_shortlist_dim(retriever), shortlist, k) if shortlist else None)
    else:
        opened = Index.load(index)
        plan = given or (Plan.two_stage(opened.shortlist_dims[0], shortlist, k) if shortlist else None)
        # Everything cheap is checked before the model loads (seconds): k, the plan, the queries;
        # the check is the view's one check of this plan (the search finds it done).
        check_once(opened, choose_plan(k, plan, opened.manifest.plan, opened.shortlist_dims[0], opened.count), k)
        retriever = Retriever(opened, index_query_encoder(opened, model, engine), plan)
    results = retriever.search_batch(texts, k=k, stages=plan)
    if json_output:
        rows = [{"query": text, "hits": [hit.__dict__ for hit in hits]} for text, hits in zip(texts, results)]
        emit_json(rows[0] if query is not None else rows)
        return
    for text, hits in zip(texts, results):
        if len(texts) > 1:
            typer.echo(f"\n» {text}")
        for hit in hits:
            typer.echo(f"{hit.rank:>3}. {hit.score:.4f}  {hit.id}  {snippet((hit.title + ': ' if hit.title else '') + hit.text)}")


def _remote(server: str, index: Path, model: Optional[str], api_key_env: Optional[str]):
    from funnel.errors import InputError
    from funnel.remote import RemoteRetriever

    if model:
        raise InputError("--model does not apply with --server: the server searches with the model it loaded")
    key = None
    if api_key_env:
        from funnel.serve.settings import api_key_from_env

        key = api_key_from_env(api_key_env)
    return RemoteRetriever(server, index.name, api_key=key)


def _shortlist_dim(retriever) -> int:
    from funnel.remote import RemoteRetriever

    if isinstance(retriever, RemoteRetriever):
        return retriever.info()["shortlists"][0]["dim"]
    return retriever.index.shortlist_dims[0]


def _queries(query: Optional[str], path: Optional[Path]) -> list[str]:
    from funnel.errors import InputError

    if (query is None) == (path is None):
        raise InputError("give one query as an argument, or --queries FILE (or - for stdin), not both")
    if query is not None:
        return [query]
    if str(path) == "-":
        try:
            lines = sys.stdin.buffer.read().decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise InputError("the queries on stdin are not UTF-8 text: write one query per line") from None
    elif path is None or not path.is_file():
        raise InputError(f"queries file {path} does not exist")
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise InputError(f"queries file {path} is not UTF-8 text: write one query per line") from None
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise InputError(f"no queries in {path}: write one query per line")
    return texts


def register(app: typer.Typer) -> None:
    app.command("search")(search_command)
