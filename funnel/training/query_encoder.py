"""Query encoders distilled into an index's model space: ``funnel train --query-encoder``.

A student learns to give the index model's normalized query embedding for a text (mean squared
error, sentence-transformers' ``MSELoss``; ``rank_weight`` adds an in-batch ranking term for the
spans, :class:`funnel.training.losses.AlignAndRankLoss`) from unlabeled query-like text: spans of the indexed
documents (:func:`funnel.spans.span_queries`) and any text files given (the training pairs'
queries, package summaries: one text a line, or JSONL/parquet with a ``query`` or ``text`` field).
The documents keep the model's vectors, so nothing is re-encoded; the student is stored with the
index (:mod:`funnel.indexes.query_encoders`) and plans name it. The model's embeddings of the
texts are computed once and cached (``$FUNNEL_CACHE/query-students``). Students:

- ``static``: a token table distilled from the model by model2vec, at the model's width — a query
  costs a tokenization and a mean of rows, about 50× less than the transformer;
- ``layers:N``: the model cut after its first N transformer layers, every weight trained.

What benchmarks/results/query-students measured: a static student on 257–270k texts keeps 87–92%
of the model's NDCG@10 on Cranfield and SciFact at a fiftieth of the encode; a 2-3 layer cut keeps
30-42%; the ranking term adds 1.9 points at weight 0.001 and costs 16 at 0.1.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from funnel.errors import InputError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from funnel.encoders.choose import TextEncoder
    from funnel.indexes.index import Index
    from funnel.indexes.manifest import Manifest

STATIC = "static"
HELD_OUT = 500
"""Texts kept out of training to measure how close the student comes to the model."""
TEXT_FIELDS = ("query", "text")


@dataclass(frozen=True)
class StudentKind:
    """What a student is: a static token table (``layers`` 0) or the model cut after ``layers`` layers."""

    layers: int = 0

    @classmethod
    def parse(cls, text: str) -> StudentKind:
        """``static`` or ``layers:N``."""
        if text.strip().lower() == STATIC:
            return cls(0)
        name, _, count = text.strip().lower().partition(":")
        if name == "layers" and count.isdigit() and int(count) >= 1:
            return cls(int(count))
        raise InputError(f"query encoder {text!r} is not one funnel trains: choose static, or layers:N (the model's first N layers)")

    @property
    def static(self) -> bool:
        return self.layers == 0

    @property
    def name(self) -> str:
        """The default name a plan calls it by: ``static`` or ``layers-2``."""
        return STATIC if self.static else f"layers-{self.layers}"


@dataclass(frozen=True)
class QueryEncoderConfig:
    """One ``funnel train --query-encoder`` run: distill ``student`` for the index at ``index``
    and store it there as ``name`` (default: the student's kind), replacing one of that name only
    with ``overwrite``. Texts: ``spans_per_document`` spans of each indexed document plus the lines
    of ``texts``, deduplicated, shuffled with ``seed`` and cut to ``max_texts``. Training: ``epochs``
    over them (or ``max_minutes``, the learning rate annealed over the time), ``batch_size`` and
    ``learning_rate`` defaulting to the student's (static: 256 and 0.05; layers: 64 and 1e-4).
    ``rank_weight`` > 0 adds an in-batch ranking term for the spans: each should score its own
    document first (:class:`funnel.training.losses.AlignAndRankLoss`); the default, 0.001, keeps
    the term at the MSE's scale (measured: Cranfield 86.8% → 88.7% of the model's NDCG@10; 0.1
    swamps the MSE and costs 16 points), 0 trains on the MSE alone."""

    index: Path
    student: StudentKind = StudentKind()
    name: str | None = None
    texts: tuple[Path, ...] = ()
    spans_per_document: int = 3
    max_texts: int = 300_000
    epochs: float = 10.0
    batch_size: int | None = None
    learning_rate: float | None = None
    max_minutes: float | None = None
    rank_weight: float = 0.001
    seed: int = 12
    overwrite: bool = False
    show_progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", Path(self.index))
        if self.rank_weight < 0:
            raise InputError(f"--rank-weight must be at least 0, not {self.rank_weight}")
        object.__setattr__(self, "texts", tuple(Path(p) for p in self.texts))
        if self.spans_per_document < 0:
            raise InputError(f"--spans-per-document must be at least 0, not {self.spans_per_document}")
        if self.max_texts < 1:
            raise InputError(f"--max-texts must be at least 1, not {self.max_texts}")
        if self.epochs <= 0:
            raise InputError(f"--epochs must be above 0, not {self.epochs}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise InputError(f"--max-minutes must be above 0, not {self.max_minutes}")
        for path in self.texts:
            if not path.is_file():
                raise InputError(f"{path} is not a file of texts: give .txt (a text a line), .jsonl or .parquet with a query or text field")

    @property
    def stored_name(self) -> str:
        return self.name or self.student.name

    @property
    def batch(self) -> int:
        return self.batch_size or (256 if self.student.static else 64)

    @property
    def rate(self) -> float:
        return self.learning_rate or (0.05 if self.student.static else 1e-4)


def train_query_encoder(config: QueryEncoderConfig) -> Manifest:
    """Distill the student, store it in the index and return the index's new manifest; the
    manifest's entry records the run and how close the student came to the model
    (cosine on held-out texts, single-query encode ms of each)."""
    from funnel.encoders.choose import load_query_encoder, open_graph
    from funnel.indexes.index import Index
    from funnel.indexes.query_encoders import check_new_name, store_query_encoder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    index = Index.load(config.index, integrity="sampled")
    check_new_name(index.manifest, config.stored_name, overwrite=config.overwrite)  # before any slow step
    texts, sources = training_texts(index, config)
    if len(texts) < HELD_OUT + config.batch:
        raise InputError(
            f"{len(texts)} distinct texts are too few to train a query encoder (at least {HELD_OUT + config.batch}): "
            "give text files (--texts) or more spans per document"
        )
    held_out, texts, sources = texts[:HELD_OUT], texts[HELD_OUT:], sources[HELD_OUT:]
    student = _student(index.manifest.model, config.student)  # refuses a cut as deep as the model before the slow part
    teacher = load_query_encoder(index.manifest.model, "auto")
    targets = teacher_targets(teacher, index.manifest.model, texts, config.show_progress)
    if config.rank_weight:
        targets = np.hstack([targets, _document_vectors(index, sources)])
    started = time.monotonic()
    steps = _fit(student, texts, targets, config)
    seconds = round(time.monotonic() - started, 1)
    with tempfile.TemporaryDirectory(prefix="funnel-student-") as scratch:
        graph = _export(student, Path(scratch) / config.stored_name, config.student)
        training = {
            "student": config.student.name,
            "texts": len(texts),
            "text_files": [str(path) for path in config.texts],
            "spans_per_document": config.spans_per_document,
            "epochs": config.epochs,
            "steps": steps,
            "batch_size": config.batch,
            "learning_rate": config.rate,
            "rank_weight": config.rank_weight,
            "train_seconds": seconds,
            "seed": config.seed,
            **_closeness(open_graph(graph), teacher, held_out),
        }

        def copy(folder: Path) -> None:
            from funnel.encoders.graph_cache import staged

            with staged(folder) as staging:
                for file in graph.iterdir():
                    shutil.copy2(file, staging / file.name)

        return store_query_encoder(config.index, config.stored_name, config.student.name, copy, training, overwrite=config.overwrite)


def _export(student: SentenceTransformer, folder: Path, kind: StudentKind) -> Path:
    """The student's engine files (checked against its torch vectors) in the graph folder ``folder``."""
    from funnel.encoders.onnx_export import export_graph
    from funnel.encoders.static_engine import export_static
    from funnel.models import Encoder

    encoder = Encoder(model=student, name=folder.name)
    (export_static if kind.static else export_graph)(encoder, folder)
    return folder


def training_texts(index: Index, config: QueryEncoderConfig) -> tuple[list[str], np.ndarray]:
    """Spans of the indexed documents and the given files' texts: distinct, shuffled, at most
    ``max_texts``; with the position of the document each text was cut from (-1: from a file)."""
    from funnel.spans import span_queries

    source: dict[str, int] = {}
    for path in config.texts:
        source.update((text.strip(), -1) for text in read_texts(path) if text.strip())
    if config.spans_per_document:
        positions = index.live_positions()
        documents = index.documents([int(p) for p in positions])
        titles, bodies = [doc["title"] for doc in documents], [doc["text"] for doc in documents]
        for round_seed in range(config.spans_per_document):
            spans = span_queries(titles, bodies, config.seed + round_seed)
            source.update((span.strip(), int(position)) for span, position in zip(spans, positions) if span.strip())
    distinct = sorted(source)
    random.Random(config.seed).shuffle(distinct)
    kept = distinct[: config.max_texts]
    return kept, np.array([source[text] for text in kept], dtype=np.int64)


def _document_vectors(index: Index, sources: np.ndarray) -> np.ndarray:
    """The model's vector of each text's document (zeros for a text of none), for the ranking term."""
    out = np.zeros((len(sources), index.dim), dtype=np.float32)
    has = sources >= 0
    out[has] = index.to_model_basis(index.vectors(sources[has]))
    return out


def read_texts(path: Path) -> list[str]:
    """The texts of a file: one a line (``.txt``), or the ``query`` (else ``text``) field of each
    JSONL record or parquet row."""
    from funnel.readers import read_jsonl, read_lines

    if path.suffix == ".jsonl":
        out = []
        for line_number, record in read_jsonl(path):
            field = next((name for name in TEXT_FIELDS if isinstance(record.get(name), str)), None)
            if field is None:
                raise InputError(f"{path}:{line_number} has no {' or '.join(TEXT_FIELDS)} field holding text")
            out.append(str(record[field]))
        return out
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        columns = pq.read_schema(path).names
        field = next((name for name in TEXT_FIELDS if name in columns), None)
        if field is None:
            raise InputError(f"{path} has no {' or '.join(TEXT_FIELDS)} column (it has: {', '.join(columns)})")
        return [str(value) for value in pq.read_table(path, columns=[field]).column(field).to_pylist() if value is not None]
    return [line for _, line in read_lines(path)]


def teacher_targets(teacher: TextEncoder, model: str, texts: Sequence[str], show_progress: bool) -> np.ndarray:
    """The model's normalized embeddings of ``texts``, from the cache when it holds them."""
    from funnel.encoders.graph_cache import cache_root, model_fingerprint
    from funnel.models import resolve_model

    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:24]
    path = cache_root() / "query-students" / f"{model_fingerprint(resolve_model(model))}-{digest}.npy"
    if path.exists():
        cached = np.load(path)
        if cached.shape == (len(texts), teacher.dim):
            return cached
    vectors = teacher.encode(list(texts), batch_size=16, show_progress=show_progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with temp.open("wb") as handle:
        np.save(handle, vectors)
    os.replace(temp, path)
    return vectors


def _student(model: str, kind: StudentKind) -> SentenceTransformer:
    from funnel.models import load_model, num_layers, resolve_model

    if kind.static:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize

        from funnel.training.static import static_from_distillation

        distilled = static_from_distillation(resolve_model(model), dim=None)
        return SentenceTransformer(modules=[distilled[0], Normalize()], device="cpu")
    student = load_model(model)
    depth = num_layers(student)
    if depth < 2:
        raise InputError(f"the model has {depth} transformer layers, too few to cut a student from: train --query-encoder static")
    if not kind.layers < depth:
        raise InputError(f"the model has {depth} transformer layers: a student cut from it keeps fewer (layers:1 to layers:{depth - 1})")
    backbone: Any = student[0].auto_model
    del backbone.encoder.layer[kind.layers :]
    backbone.config.num_hidden_layers = kind.layers
    return student


def _fit(student: SentenceTransformer, texts: list[str], targets: np.ndarray, config: QueryEncoderConfig) -> int:
    """Train ``student`` onto ``targets``; returns the steps taken."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MSELoss
    from transformers import PrinterCallback, set_seed

    from funnel.training.losses import AlignAndRankLoss
    from funnel.training.trainer import budget_callback

    set_seed(config.seed)
    data = Dataset.from_dict({"text": texts, "label": targets.astype(np.float32)})
    log: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="funnel-student-run-") as scratch:
        arguments = SentenceTransformerTrainingArguments(
            output_dir=scratch,
            num_train_epochs=config.epochs,
            per_device_train_batch_size=config.batch,
            learning_rate=config.rate,
            warmup_steps=0 if config.max_minutes else 0.05,  # a float below 1 is a ratio in transformers 5
            lr_scheduler_type="constant" if config.max_minutes else "linear",
            logging_steps=50,
            save_strategy="no",
            report_to="none",
            seed=config.seed,
            data_seed=config.seed,
            dataloader_drop_last=True,
            disable_tqdm=not config.show_progress,
            use_cpu=True,
        )
        trainer = SentenceTransformerTrainer(
            model=student,
            args=arguments,
            train_dataset=data,
            loss=AlignAndRankLoss(student, config.rank_weight) if config.rank_weight else MSELoss(student),
            callbacks=[budget_callback(log, config.max_minutes, config.rate, 0.05)],
        )
        if not config.show_progress:
            trainer.remove_callback(PrinterCallback)
        trainer.train()
    student.eval()
    return int(trainer.state.global_step)


def _closeness(student: TextEncoder, teacher: TextEncoder, held_out: list[str]) -> dict[str, float]:
    """How close the student comes to the model on texts it never trained on: the mean cosine
    of their vectors, and the median ms each takes for one query (the same texts)."""
    from funnel.evaluation.timing import Timing, time_each

    cosine = float((student.encode(held_out) * teacher.encode(held_out)).sum(axis=1).mean())
    timed = held_out[:50]
    return {
        "held_out_cosine": round(cosine, 4),
        "held_out_texts": len(held_out),
        "student_ms": round(Timing.of(time_each(lambda text: student.encode([text]), timed)).median_ms, 3),
        "model_ms": round(Timing.of(time_each(lambda text: teacher.encode([text]), timed)).median_ms, 3),
    }


def describe(manifest: Manifest, name: str) -> str:
    """One line on a stored query encoder, for the CLI."""
    entry = manifest.query_encoder(name)
    if entry is None:
        return name
    t = entry.training
    return (
        f"query encoder {name!r} ({entry.kind}): {t.get('texts', 0):,} texts, {t.get('steps', 0)} steps in {t.get('train_seconds')} s; "
        f"cosine to the model {t.get('held_out_cosine')} on {t.get('held_out_texts')} held-out texts; "
        f"{t.get('student_ms')} ms a query against the model's {t.get('model_ms')} ms"
    )
