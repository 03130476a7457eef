"""`funnel train DATA... --output DIR`: train a nested-embedding model (Matryoshka, 2D, Starbucks, static)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from funnel.cli.output import writing
from funnel.errors import InputError


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
    data: list[Path] = typer.Argument(..., help="JSONL/parquet pairs, triplets or scored pairs, or BEIR folders."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the trained model."),
    model: Optional[str] = typer.Option(None, help="Starting model folder.", show_default="offline all-MiniLM-L6-v2"),
    static: Optional[str] = typer.Option(None, help="Train a static model: 'tokenizer' (fresh) or 'distill' (model2vec)."),
    static_dim: int = typer.Option(1024, help="Width of a static model."),
    scheme: str = typer.Option("matryoshka", help="matryoshka, 2d, starbucks or none."),
    dims: Optional[str] = typer.Option(None, help="Nested dims, e.g. 384,256,128,64,32.", show_default="powers of two"),
    dim_weights: Optional[str] = typer.Option(None, help="One loss weight per dim."),
    pairs: Optional[str] = typer.Option(None, help="Starbucks layer:dim pairs, e.g. 2:32,4:64,6:384."),
    pair_weights: Optional[str] = typer.Option(None, help="One loss weight per layer:dim pair."),
    loss: str = typer.Option("mnrl", help="mnrl, cached-mnrl, cosent (scored pairs) or gist."),
    guide_model: Optional[str] = typer.Option(None, help="Guide model folder for gist."),
    batch_size: int = typer.Option(32),
    mini_batch_size: int = typer.Option(32, help="Mini-batch of cached-mnrl."),
    lr: float = typer.Option(2e-5, "--lr", help="Peak learning rate."),
    epochs: float = typer.Option(1.0),
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
    """Train a model whose small prefixes (and first layers) are good, and save it for `funnel index`."""
    from funnel.training import TrainConfig, train

    config = TrainConfig(
        data=tuple(data),
        output=output,
        model=model,
        static=static,
        static_dim=static_dim,
        scheme=scheme,
        dims=_ints(dims, "--dims"),
        dim_weights=_floats(dim_weights, "--dim-weights"),
        layer_dim_pairs=_pairs(pairs),
        pair_weights=_floats(pair_weights, "--pair-weights"),
        loss=loss,
        guide_model=guide_model,
        batch_size=batch_size,
        mini_batch_size=mini_batch_size,
        learning_rate=lr,
        epochs=epochs,
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


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
