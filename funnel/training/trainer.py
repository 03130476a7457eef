"""Wire a TrainConfig into sentence-transformers' trainer and save a model funnel can index.

The output folder is a sentence-transformers model plus ``funnel.json``: the scheme, the dims and
(layer, dim) pairs it was trained for, the base model, the data and the wall time. Checkpoints go
to ``OUTPUT.checkpoints/`` and are removed once the model is saved; ``resume`` continues from the
latest one after an interruption.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from funnel.errors import InputError
from funnel.models import METADATA_FILE, load_model, resolve_model
from funnel.training.config import TrainConfig, default_dims, scaled_starbucks_pairs

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


def checkpoint_dir(output: Path) -> Path:
    return output.with_name(output.name + ".checkpoints")


def latest_checkpoint(output: Path) -> Path | None:
    """The newest ``checkpoint-STEP`` folder under ``OUTPUT.checkpoints``, or None."""
    folder = checkpoint_dir(output)
    found = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[-1])) if folder.is_dir() else []
    return found[-1] if found else None


def build_model(config: TrainConfig) -> tuple[SentenceTransformer, str]:
    """The model to train and a name for its starting point (recorded in the metadata)."""
    from funnel.training.static import static_from_distillation, static_from_tokenizer

    source = resolve_model(config.model)
    base_name = "all-MiniLM-L6-v2" if config.model is None else str(source)
    if config.static == "tokenizer":
        return static_from_tokenizer(source, config.static_dim), f"static({config.static_dim}) over {base_name} tokenizer"
    if config.static == "distill":
        return static_from_distillation(source, config.static_dim), f"model2vec distillation of {base_name}"
    model = load_model(source, device="cpu")
    if config.fold_rotation is not None:
        fold_rotation(model, config.fold_rotation)
        base_name += f" with the rotation of {config.fold_rotation} folded in"
    return model, base_name


def fold_rotation(model: SentenceTransformer, index_path: Path) -> None:
    """Append the rotation an index stores its vectors in (stored = model · R) to ``model`` as a
    bias-free Dense layer, so the model gives the index's stored vectors directly."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense

    from funnel.indexes.index import Index
    from funnel.models import embedding_dimension

    index = Index.load(index_path, integrity="sampled")
    rotation = index.rotation(None)
    if rotation is None:
        raise InputError(f"{index_path} stores its vectors in the model's order: there is no rotation to fold in")
    width = embedding_dimension(model)
    if rotation.shape != (width, width):
        raise InputError(
            f"{index_path} holds a {rotation.shape[0]}-dim rotation but the model gives {width} dims: give the index built with it"
        )
    dense = Dense(width, width, bias=False, activation_function=torch.nn.Identity())
    with torch.no_grad():
        dense.linear.weight.copy_(torch.from_numpy(rotation.T.copy()))
    model.append(dense)


def freeze(model: SentenceTransformer, layers: int) -> None:
    """Stop training the word embeddings and the first ``layers`` transformer layers."""
    from funnel.training.losses import num_layers

    depth = num_layers(model)
    if not 0 < layers < depth:
        raise InputError(f"frozen_layers must leave a layer to train: choose 1..{depth - 1}, got {layers}")
    # The stubs type a submodule's attributes as Tensor | Module; this is the Hugging Face model.
    encoder: Any = model[0].auto_model
    for module in (encoder.embeddings, *encoder.encoder.layer[:layers]):
        module.requires_grad_(False)


def nesting(config: TrainConfig, model: SentenceTransformer) -> tuple[list[int], list[tuple[int, int]]]:
    """The dims and (layer, dim) pairs this run trains, from the config or the model's shape."""
    from funnel.models import embedding_dimension, num_layers

    width, depth = embedding_dimension(model), num_layers(model)
    dims = sorted(set(config.dims or default_dims(width)), reverse=True)
    if dims[0] > width:
        raise InputError(f"dims {dims} exceed the model's {width} dims")
    if config.scheme == "starbucks":
        pairs = list(config.layer_dim_pairs or scaled_starbucks_pairs(depth, width))
        return sorted({d for _, d in pairs}, reverse=True), pairs
    if config.scheme == "2d":
        return dims, [(layer, d) for layer in range(1, depth + 1) for d in sorted(dims)]
    if config.scheme == "none":
        dims = [width]
    return dims, [(depth, d) for d in sorted(dims)] if depth else []


def _callbacks(config: TrainConfig, log: list[dict[str, float]]) -> list[Any]:
    return [budget_callback(log, config.max_minutes, config.learning_rate, config.warmup_ratio)]


def budget_callback(log: list[dict[str, float]], max_minutes: float | None, learning_rate: float, warmup_ratio: float) -> Any:
    """A callback that records the loss in ``log`` and keeps a run to ``max_minutes`` (see Budget)."""
    from transformers import TrainerCallback

    class Budget(TrainerCallback):
        """Records the loss; with ``max_minutes``, schedules the learning rate by elapsed time
        (linear warm-up over the first ``warmup_ratio`` of the budget, then linear decay to 0)
        and stops cleanly when the time is up, so a time-boxed run still anneals."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.begin = time.monotonic()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                log.append({"step": state.global_step, "loss": float(logs["loss"])})

        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            if max_minutes is None or optimizer is None:
                return
            # Runs after the (constant) scheduler has set the rate and before the optimizer uses it.
            done = min(1.0, (time.monotonic() - self.begin) / (60 * max_minutes))
            warm = min(1.0, done / warmup_ratio) if warmup_ratio > 0 else 1.0
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * warm * max(0.0, 1.0 - done)

        def on_step_end(self, args, state, control, **kwargs):
            if max_minutes is not None and time.monotonic() - self.begin > 60 * max_minutes:
                control.should_training_stop = True

    return Budget()


def run_training(config: TrainConfig) -> Path:
    """Train as ``config`` says; returns the saved model folder (``config.output``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from transformers import PrinterCallback, set_seed

    from funnel.training.data import PAIR_KIND, kind_of, load_examples
    from funnel.training.losses import build_loss
    from funnel.training.mining import NegativePool, mine_negatives, remining_callback

    output = config.output
    if output.exists() and not (output / METADATA_FILE).exists():
        raise InputError(f"{output} exists and is not a funnel-trained model: choose a new output folder")
    resume_from = latest_checkpoint(output) if config.resume else None
    if config.resume and resume_from is None:
        raise InputError(f"nothing to resume: no checkpoint under {checkpoint_dir(output)}")

    set_seed(config.seed)
    dataset = load_examples(config.data, max_rows=config.max_pairs, seed=config.seed)
    kind = kind_of(dataset)
    check_enough_examples(len(dataset), kind, config)  # before the model loads: nothing is trained or written
    model, base_name = build_model(config)
    dims, pairs = nesting(config, model)
    if config.frozen_layers:
        freeze(model, config.frozen_layers)
    # Train on shorter sequences for speed, but save the model with its own limit for inference.
    inference_length = None if config.static else model.max_seq_length
    if config.max_seq_length is not None and inference_length is not None:
        model.max_seq_length = config.max_seq_length

    log: list[dict[str, float]] = []
    callbacks = _callbacks(config, log)
    if config.hard_negatives:
        if kind != PAIR_KIND:
            raise InputError("hard negatives are mined for (query, positive) pairs, not scored pairs")
        dataset, scores = mine_negatives(
            dataset, model, config.hard_negatives, relative_margin=config.mining_margin, show_progress=config.show_progress
        )
        if config.remine_every:
            pool = NegativePool(dataset, scores)
            dataset = pool.dataset()
            callbacks.append(remining_callback(pool, model, config))

    loss = build_loss(config, model, kind, dims, pairs)
    set_seed(config.seed)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoint_dir(output)),
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=0 if config.max_minutes else config.warmup_ratio,  # a float below 1 is a ratio in transformers 5
        lr_scheduler_type="constant" if config.max_minutes else "linear",
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        seed=config.seed,
        data_seed=config.seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES if kind == PAIR_KIND else BatchSamplers.BATCH_SAMPLER,
        logging_steps=int(config.extra.get("log_every", 10)),
        save_strategy="steps" if config.checkpoint_every else "no",
        save_steps=config.checkpoint_every or 500,
        save_total_limit=2,
        report_to="none",
        disable_tqdm=not config.show_progress,
        use_cpu=not _cuda(),
        fp16=config.fp16,
        dataloader_drop_last=kind == PAIR_KIND,
        remove_unused_columns=False,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss, callbacks=callbacks)
    if not config.show_progress:
        trainer.remove_callback(PrinterCallback)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if trainer.state.global_step == 0:
        # Enough rows can still make no batch (a batch takes no repeated text): an untrained copy
        # saved as if trained would be worse than nothing.
        shutil.rmtree(checkpoint_dir(output), ignore_errors=True)
        raise InputError(
            f"training ran 0 steps on {len(dataset)} examples (too few distinct texts to fill one batch of {config.batch_size}): "
            "nothing saved; give more distinct examples or a smaller batch_size (--batch-size)"
        )
    if inference_length is not None:
        model.max_seq_length = inference_length

    metadata = {
        "scheme": "static-matryoshka" if config.static and config.scheme == "matryoshka" else config.scheme,
        "nested_dims": dims,
        "layer_dim_pairs": [list(p) for p in pairs],
        "base_model": base_name,
        "base_loss": config.loss,
        "trained_on": [str(p) for p in config.data],
        "train_pairs": len(dataset),
        "steps": trainer.state.global_step,
        "train_seconds": round(time.monotonic() - started, 1),
        "seed": config.seed,
        "frozen_layers": config.frozen_layers,
        "loss_log": log,
    }
    _save(model, metadata, output)
    shutil.rmtree(checkpoint_dir(output), ignore_errors=True)
    return output


def check_enough_examples(count: int, kind: str, config: TrainConfig) -> None:
    """Refuse a run that could not take one step: (query, positive) batches drop an incomplete
    last batch (in-batch negatives need a full one), so fewer pairs than ``batch_size`` train nothing."""
    from funnel.training.data import PAIR_KIND

    if kind == PAIR_KIND and count < config.batch_size:
        raise InputError(
            f"{count} training pairs are fewer than one batch of {config.batch_size}, so training would take 0 steps: "
            f"give at least {config.batch_size} pairs or a smaller batch_size (--batch-size)"
        )


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _save(model: SentenceTransformer, metadata: dict[str, Any], output: Path) -> None:
    """Write the model and funnel.json to a temporary sibling folder, then move it into place."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=output.name + ".tmp-", dir=output.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a model folder is meant to be shared
    model.save(str(staging))
    (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    if output.exists():
        shutil.rmtree(output)
    os.replace(staging, output)
