"""`funnel train DATA... --output DIR`: train a nested-embedding model (Matryoshka, 2D, Starbucks, static);
`funnel train --query-encoder static --index IDX [TEXTS...]`: distill a cheap query encoder into an index's model space."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from funnel.cli.output import writing
from funnel.errors import InputError

if TYPE_CHECKING:
    from funnel.training.query_encoder import QueryEncoderConfig
    from funnel.training.smae import SmaeConfig


def _ints(text: Optional[str], name: str) -> Optional[tuple[int, ...]]:
    if not text:
        return None
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"{name} must be comma-separated integers, e.g. 384,256,128,64,32; got {text!r}") from None


def _floats(text: Optional[str], name: str) -> Optional[tuple[float, ...]]:
    if not text:
        return None
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"{name} must be comma-separated numbers, e.g. 1,1,1,2,2; got {text!r}") from None


def _pairs(text: Optional[str]) -> Optional[tuple[tuple[int, int], ...]]:
    if not text:
        return None
    try:
        return tuple((int(p.split(":")[0]), int(p.split(":")[1])) for p in text.split(","))
    except (ValueError, IndexError):
        raise InputError(f"--pairs must be layer:dim pairs, e.g. 2:32,4:64,6:384; got {text!r}") from None


def train_command(
    data: Optional[list[Path]] = typer.Argument(
        None,
        help="JSONL/parquet pairs, triplets or scored pairs, BEIR folders, or index folders (span-document pairs of their "
        "documents, for --loss distill); with --query-encoder, query-like texts "
        "(.txt a text a line, or .jsonl/.parquet with a query or text field).",
        show_default=False,
    ),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Folder for the trained model (not with --query-encoder)."),
    query_encoder: Optional[str] = typer.Option(
        None,
        "--query-encoder",
        help="Distill a query encoder into --index's model space instead: static (a token table) or layers:N (the model's first N layers).",
    ),
    index: Optional[Path] = typer.Option(None, "--index", help="The index a --query-encoder is trained for and stored in."),
    pretrain: Optional[str] = typer.Option(
        None,
        "--pretrain",
        help="Continue pre-training instead: smae (Starbucks masked autoencoding through the (layer, dim) pairs) on the corpora given as DATA.",
    ),
    name: Optional[str] = typer.Option(None, "--name", help="What plans call the query encoder.", show_default="static or layers-N"),
    spans_per_document: int = typer.Option(3, help="Query encoder: spans of each indexed document added to the texts."),
    max_texts: int = typer.Option(300_000, help="Query encoder: train on at most this many distinct texts."),
    rank_weight: float = typer.Option(
        0.001, help="Query encoder: weight of an in-batch ranking term (each span scores its document first); 0: the MSE alone."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the index's query encoder of the same name."),
    model: Optional[str] = typer.Option(None, help="Starting model folder.", show_default="offline all-MiniLM-L6-v2"),
    fold_rotation: Optional[Path] = typer.Option(
        None, "--fold-rotation", help="An index built with the model: start from the model with its rotation appended (a Dense layer)."
    ),
    static: Optional[str] = typer.Option(None, help="Train a static model: 'tokenizer' (fresh) or 'distill' (model2vec)."),
    static_dim: int = typer.Option(1024, help="Width of a static model."),
    scheme: str = typer.Option("matryoshka", help="matryoshka, 2d, starbucks or none."),
    dims: Optional[str] = typer.Option(None, help="Nested dims, e.g. 384,256,128,64,32.", show_default="powers of two"),
    dim_weights: Optional[str] = typer.Option(None, help="One loss weight per dim."),
    pairs: Optional[str] = typer.Option(None, help="Starbucks layer:dim pairs, e.g. 2:32,4:64,6:384."),
    pair_weights: Optional[str] = typer.Option(None, help="One loss weight per layer:dim pair."),
    loss: str = typer.Option("mnrl", help="mnrl, cached-mnrl, cosent (scored pairs) or gist."),
    guide_model: Optional[str] = typer.Option(None, help="Guide model folder for gist."),
    batch_size: Optional[int] = typer.Option(None, show_default="32; a query encoder: 256 static, 64 layers"),
    mini_batch_size: int = typer.Option(32, help="Mini-batch of cached-mnrl."),
    lr: Optional[float] = typer.Option(
        None, "--lr", help="Peak learning rate.", show_default="2e-5; a query encoder: 0.05 static, 1e-4 layers"
    ),
    epochs: Optional[float] = typer.Option(None, show_default="1; a query encoder: 10"),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many steps."),
    max_minutes: Optional[float] = typer.Option(None, help="Stop cleanly after this many minutes."),
    max_pairs: Optional[int] = typer.Option(None, help="Train on a shuffled subset of this many examples."),
    max_seq_length: Optional[int] = typer.Option(128, help="Token limit while training."),
    frozen_layers: int = typer.Option(0, help="Keep word embeddings and the first N layers fixed (faster on CPU)."),
    hard_negatives: int = typer.Option(0, help="Negatives per pair mined with the starting model."),
    remine_every: int = typer.Option(0, help="Re-mine easy negatives every N steps (Conan)."),
    remine_factor: float = typer.Option(1.15),
    remine_floor: float = typer.Option(0.8),
    checkpoint_every: int = typer.Option(0, help="Save a checkpoint every N steps."),
    resume: bool = typer.Option(False, help="Continue from the latest checkpoint of OUTPUT."),
    seed: int = typer.Option(12),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train a model whose small prefixes (and first layers) are good, and save it for `funnel index`;
    or, with --query-encoder, a cheap query encoder stored in an index (plans name it: static:full:10)."""
    if query_encoder is not None:
        if index is None or output is not None:
            raise InputError("--query-encoder trains for an index and stores the encoder in it: give --index INDEX, not --output")
        from funnel.indexes.manifest import check_encoder_name
        from funnel.training.query_encoder import QueryEncoderConfig, StudentKind

        _train_query_encoder(
            QueryEncoderConfig(
                index=index,
                student=StudentKind.parse(query_encoder),
                name=check_encoder_name(name) if name is not None else None,
                texts=tuple(data or ()),
                spans_per_document=spans_per_document,
                max_texts=max_texts,
                rank_weight=rank_weight,
                epochs=10.0 if epochs is None else epochs,
                batch_size=batch_size,
                learning_rate=lr,
                max_minutes=max_minutes,
                seed=seed,
                overwrite=overwrite,
                show_progress=not quiet,
            )
        )
        return
    if not data or output is None:
        raise InputError("give training data and --output DIR (or --query-encoder static --index INDEX to train a query encoder)")
    if pretrain is not None:
        if pretrain != "smae":
            raise InputError(f"--pretrain {pretrain!r} is not an objective funnel runs: choose smae")
        from funnel.training.smae import SmaeConfig

        _pretrain(
            SmaeConfig(
                data=tuple(data),
                output=output,
                model=model,
                layer_dim_pairs=_pairs(pairs),
                batch_size=batch_size or 32,
                learning_rate=lr or 1e-4,
                epochs=1.0 if epochs is None else epochs,
                max_minutes=max_minutes,
                max_seq_length=max_seq_length or 128,
                seed=seed,
                show_progress=not quiet,
            )
        )
        return
    from funnel.training import TrainConfig, train

    config = TrainConfig(
        data=tuple(data),
        output=output,
        model=model,
        fold_rotation=fold_rotation,
        static=static,
        static_dim=static_dim,
        scheme=scheme,
        dims=_ints(dims, "--dims"),
        dim_weights=_floats(dim_weights, "--dim-weights"),
        layer_dim_pairs=_pairs(pairs),
        pair_weights=_floats(pair_weights, "--pair-weights"),
        loss=loss,
        guide_model=guide_model,
        batch_size=batch_size or 32,
        mini_batch_size=mini_batch_size,
        learning_rate=lr or 2e-5,
        epochs=1.0 if epochs is None else epochs,
        max_steps=max_steps,
        max_minutes=max_minutes,
        max_pairs=max_pairs,
        max_seq_length=max_seq_length,
        frozen_layers=frozen_layers,
        hard_negatives=hard_negatives,
        remine_every=remine_every,
        remine_factor=remine_factor,
        remine_floor=remine_floor,
        checkpoint_every=checkpoint_every,
        resume=resume,
        seed=seed,
        show_progress=not quiet,
    )
    with writing(output):
        folder = train(config)
    from funnel.models import read_model_metadata

    meta = read_model_metadata(folder)
    typer.echo(f"{folder}: {meta['scheme']}, dims {meta['nested_dims']}, {meta['steps']} steps in {meta['train_seconds']} s")


def _pretrain(config: SmaeConfig) -> None:
    from funnel.training.smae import SMAE_METADATA, pretrain_smae

    with writing(config.output):
        folder = pretrain_smae(config)
    meta = json.loads((folder / SMAE_METADATA).read_text())
    typer.echo(
        f"{folder}: SMAE through {meta['layer_dim_pairs']}, {meta['steps']} steps on {meta['documents']} documents in {meta['train_seconds']} s"
    )
    typer.echo(f"fine-tune it: funnel train PAIRS --model {folder} --scheme starbucks -o MODEL")


def _train_query_encoder(config: QueryEncoderConfig) -> None:
    from funnel.training.query_encoder import describe, train_query_encoder

    manifest = train_query_encoder(config)
    typer.echo(describe(manifest, config.stored_name))
    typer.echo(f"search with it: funnel search {config.index} QUERY --stages {config.stored_name}:full:10")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
