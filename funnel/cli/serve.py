"""`funnel serve INDEX [INDEX…]`: search over HTTP, the model loaded once."""

from __future__ import annotations

import typer


def serve_command(
    indexes: list[str] = typer.Argument(..., help="Index folders to serve, each PATH or NAME=PATH (named by its folder otherwise)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 exposes the server to the network."),
    port: int = typer.Option(8000, help="Port to listen on (0: any free port)."),
    api_key_env: str | None = typer.Option(
        None, "--api-key-env", help="Require 'Authorization: Bearer KEY', KEY read from this environment variable."
    ),
    workers: int = typer.Option(0, help="Searches run at once, in threads (0: one per core)."),
    max_k: int = typer.Option(1000, help="Largest k a request may ask for."),
    max_batch: int = typer.Option(256, help="Most queries in one request."),
    max_query_chars: int = typer.Option(4096, help="Longest query, in characters."),
    max_body_bytes: int = typer.Option(1_048_576, help="Largest request body, in bytes."),
    max_coalesce: int = typer.Option(64, help="Most queries that requests waiting together share one search batch with (1: none)."),
    model: str | None = typer.Option(None, help="Model folder.", show_default="the one each index was built with"),
    query_encoder: str = typer.Option(
        "auto", help="Engine for the queries: auto (the model's ONNX graph, else torch), onnx, onnx-int8 or torch."
    ),
    grace: int = typer.Option(30, "--grace", help="On SIGTERM, seconds requests in flight may run on; later ones get 503."),
    show_paths: bool = typer.Option(False, "--show-paths", help="Show the index folder and the corpus's path in /info answers."),
    log_level: str = typer.Option("info", help="uvicorn's log level: critical, error, warning, info, debug."),
) -> None:
    """Serve indexes over HTTP: POST /search, GET /health, GET /info, docs at /docs. Stops cleanly on SIGTERM."""
    from funnel.errors import InputError

    try:
        import uvicorn  # noqa: F401

        import funnel.serve.app  # noqa: F401  (FastAPI and uvicorn, checked before the model loads)
        from funnel.serve import ServeLimits, ServeSettings, api_key_from_env, bind_listener, load_retrievers, name_indexes, serve
        from funnel.serve.runner import listener_port
    except ImportError as exc:
        raise InputError(f"funnel serve needs the serve extra ({exc.name} is missing): pip install 'funnel[serve]'") from exc

    from funnel.encoders.choose import parse_engine

    engine = parse_engine(query_encoder)
    limits = ServeLimits(
        max_k=max_k,
        max_batch=max_batch,
        max_query_chars=max_query_chars,
        max_body_bytes=max_body_bytes,
        workers=workers,
        max_coalesce=max_coalesce,
    )
    settings = ServeSettings(
        host=host,
        port=port,
        api_key=api_key_from_env(api_key_env) if api_key_env else None,
        limits=limits,
        grace_seconds=grace,
        show_paths=show_paths,
    )
    paths = name_indexes(indexes)
    listener = bind_listener(settings)  # a port in use fails now, not after the model has loaded
    typer.echo(f"loading {len(paths)} index(es) and the model for http://{host}:{listener_port(listener)} …", err=True)
    try:
        retrievers = load_retrievers(paths, model, engine)
    except BaseException:
        listener.close()
        raise
    for name, retriever in retrievers.items():
        typer.echo(f"  {name}: {retriever.index.count} documents from {retriever.index.path}", err=True)
    serve(retrievers, settings, log_level, listener)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
