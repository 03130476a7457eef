"""The funnel plan: stages, each keeping fewer candidates at more dims, parsed once at the edge.

The first stage shortlists from a FAISS index over its dims (a first stage at full dims scans
every vector exactly where no full-dim shortlist is stored); each later stage rescores the
survivors of the one before with the stored full vectors truncated to its dims (re-normalized),
and the last stage's ranking gives the top-k. ``"64:200,384:10"`` reads: shortlist 200 at 64
dims, rescore them at 384 dims, keep 10. A stage may also name a depth: ``"2:64:200,6:384:10"``
shortlists with the model cut after 2 layers and rescores with all 6. The first stage may add
BM25's best documents for the query text to its shortlist: ``"64:400+bm25:50,full:10"`` rescores
the union of the 400 and the 50 at full dims (an index built with its lexical index,
:mod:`funnel.indexes.lexical`); ``"64:400+bm25:50,full:10+rrf"`` ranks the last stage by
reciprocal-rank fusion of the dense and BM25 ranks instead (hybrid ranking).

A :class:`Plan` checks what it can alone (at least one stage, each a stage) when it is made;
:func:`check_plan` checks it against one index view (narrowing, dims, layers, shortlists, k), which
:func:`funnel.search.run.run_funnel` does once per plan and view.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, Union, overload

import numpy as np

from funnel.errors import InputError
from funnel.indexes.manifest import check_encoder_name


class PlanTarget(Protocol):
    """What a plan is checked against: a local index view or a Qdrant collection."""

    @property
    def dim(self) -> int: ...

    @property
    def shortlist_dims(self) -> list[int]: ...

    def check_layer(self, layer: int | None) -> None: ...

    def is_full_depth(self, layer: int | None) -> bool: ...

    def has_shortlist(self, dim: int, layer: int | None = None) -> bool: ...

    @property
    def has_lexical(self) -> bool: ...

    def check_query_encoder(self, name: str) -> None: ...


@dataclass(frozen=True)
class Stage:
    """One step of the funnel: score at ``dim`` dims (None: full) and keep ``candidates``.

    ``layer`` (None: the model's full depth) is the encoder depth the stage's vectors come from;
    ``encoder`` names a query encoder the index stores instead (its vectors are the full model's
    kind: a stage names a layer or an encoder, not both).
    ``lexical``: BM25 candidates for the query text added to the stage's own (first stage only).
    ``fusion``: ``"rrf"`` ranks the stage's candidates by reciprocal-rank fusion of their dense
    rank and the first stage's BM25 rank (last stage only: hybrid ranking; scores become RRF's).
    """

    dim: int | None
    candidates: int
    layer: int | None = None
    lexical: int = 0
    fusion: str | None = None
    encoder: str | None = None

    def __post_init__(self) -> None:
        for name, value in (("candidates", self.candidates), ("dim", self.dim), ("layer", self.layer), ("lexical", self.lexical)):
            if (value is not None or name in ("candidates", "lexical")) and not is_whole(value):
                raise InputError(f"a stage's {name} must be a whole number, not {value!r} ({type(value).__name__})")
        if self.candidates < 1:
            raise InputError(f"a stage must keep at least 1 candidate, not {self.candidates}")
        if self.dim is not None and self.dim < 1:
            raise InputError(f"a stage's dims must be at least 1, not {self.dim}")
        if self.lexical < 0:
            raise InputError(f"a stage's lexical candidates must be at least 0, not {self.lexical}")
        if self.fusion not in (None, *FUSIONS):
            raise InputError(f"unknown fusion {self.fusion!r}: choose {' or '.join(FUSIONS)}")
        if self.encoder is not None:
            check_encoder_name(self.encoder)
            if self.layer is not None:
                raise InputError(f"a stage names a layer or a query encoder, not both ({self.layer} and {self.encoder!r})")

    @property
    def queries(self) -> int | str | None:
        """Where the stage's query vector comes from: a query encoder's name, a layer, or None
        (the full model)."""
        return self.encoder if self.encoder is not None else self.layer

    @property
    def passes_on(self) -> int:
        """The most candidates the stage hands to the next: its own and its lexical ones."""
        return self.candidates + self.lexical

    def resolved_dim(self, full_dim: int) -> int:
        return full_dim if self.dim is None else self.dim

    def __str__(self) -> str:
        dim = "full" if self.dim is None else str(self.dim)
        source = self.queries
        dense = f"{source}:{dim}:{self.candidates}" if source is not None else f"{dim}:{self.candidates}"
        lexical = f"+{LEXICAL}:{self.lexical}" if self.lexical else ""
        return dense + lexical + (f"+{self.fusion}" if self.fusion else "")


LEXICAL = "bm25"
"""How a plan names the lexical candidates: ``+bm25:N``."""
FUSIONS = ("rrf",)
"""How a last stage may fuse its dense ranking with the BM25 one: ``+rrf``."""


def parse_stage(text: str) -> Stage:
    """``DIM:CANDIDATES``, ``LAYER:DIM:CANDIDATES`` or ``ENCODER:DIM:CANDIDATES``, DIM may be
    ``full``; the first stage may add ``+bm25:N`` (BM25's best N), the last ``+rrf`` (hybrid ranking)."""
    dense, *extras = text.strip().split("+")
    parts = dense.strip().split(":")
    try:
        lexical, fusion = _parse_extras(extras)
        if len(parts) == 2:
            return Stage(dim=_parse_dim(parts[0]), candidates=int(parts[1]), lexical=lexical, fusion=fusion)
        if len(parts) == 3:
            source = parts[0].strip().lower()
            layer, encoder = (int(source), None) if source.isdigit() else (None, check_encoder_name(source))
            return Stage(_parse_dim(parts[1]), int(parts[2]), layer=layer, lexical=lexical, fusion=fusion, encoder=encoder)
    except ValueError:
        pass
    raise InputError(
        f"stage {text!r} is not DIM:CANDIDATES, LAYER:DIM:CANDIDATES or ENCODER:DIM:CANDIDATES, optionally with "
        f"+{LEXICAL}:N or +rrf (e.g. 64:200, full:10, 2:64:200, static:full:10, 64:400+bm25:50 or full:10+rrf)"
    )


def _parse_extras(extras: list[str]) -> tuple[int, str | None]:
    lexical, fusion = 0, None
    for extra in (e.strip().lower() for e in extras):
        name, colon, count = extra.partition(":")
        if name == LEXICAL and colon and not lexical:
            lexical = int(count)
        elif extra in FUSIONS and fusion is None:
            fusion = extra
        else:
            raise ValueError(extra)
    return lexical, fusion


def _parse_dim(text: str) -> int | None:
    return None if text.strip().lower() == "full" else int(text)


@dataclass(frozen=True, eq=False)
class Plan(Sequence[Stage]):
    """The stages of one search, first to last; behaves as a tuple of :class:`Stage`.

    Made from a string once, where the string enters (the CLI, an HTTP body, a public function):
    ``Plan.parse("64:200,full:10")``; after that the Plan travels as it is.
    """

    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        stages = tuple(self.stages)
        object.__setattr__(self, "stages", stages)
        if not stages:
            raise InputError("a funnel needs at least one stage: write them like 64:200,full:10")
        for stage in stages:
            if not isinstance(stage, Stage):
                raise InputError(f"a plan holds stages, not {stage!r}: write them like 64:200,full:10")

    @classmethod
    def parse(cls, text: str) -> Plan:
        """``"64:200,128:50,full:10"`` → three stages."""
        if not isinstance(text, str):
            raise InputError(f"a plan is written like 64:200,full:10, not {text!r}")
        stages = tuple(parse_stage(part) for part in text.split(",") if part.strip())
        if not stages:
            raise InputError("no stages given: write them like 64:200,full:10")
        return cls(stages)

    @classmethod
    def of(cls, value: PlanLike) -> Plan:
        """A Plan from what a public function accepts: a Plan (as it is), a string or stages."""
        if isinstance(value, Plan):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        return cls(tuple(value))

    @classmethod
    def two_stage(cls, shortlist_dim: int, shortlist_size: int, k: int) -> Plan:
        """Shortlist ``shortlist_size`` at ``shortlist_dim`` dims, rescore at full dims, keep ``k``."""
        return cls((Stage(dim=shortlist_dim, candidates=max(shortlist_size, k)), Stage(dim=None, candidates=k)))

    @property
    def is_lexical(self) -> bool:
        """Whether the plan adds BM25 candidates (and so needs the query texts)."""
        return any(stage.lexical for stage in self.stages)

    def dense(self) -> Plan:
        """The plan without its BM25 candidates and fusion: what runs on query vectors alone."""
        return Plan(tuple(replace(stage, lexical=0, fusion=None) for stage in self.stages))

    @property
    def default_k(self) -> int:
        """The hits a search returns when it names no k: what the last stage keeps."""
        return self.stages[-1].candidates

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    @overload
    def __getitem__(self, item: int) -> Stage: ...
    @overload
    def __getitem__(self, item: slice) -> tuple[Stage, ...]: ...
    def __getitem__(self, item: int | slice) -> Stage | tuple[Stage, ...]:
        return self.stages[item]

    def __str__(self) -> str:
        return ",".join(map(str, self.stages))

    def __eq__(self, other: object) -> bool:  # equal to another Plan, or to a tuple of the same stages
        if isinstance(other, Plan):
            return self.stages == other.stages
        return isinstance(other, tuple) and self.stages == other

    def __hash__(self) -> int:
        return hash(self.stages)


PlanLike = Union[Plan, str, Sequence[Stage]]


DEFAULT_K = 10


def resolve_k(k: int | None, plan: Plan | None) -> int:
    """The hits a search returns: ``k`` when given, else what the plan's last stage keeps, else
    :data:`DEFAULT_K`. The one rule for every door (the API, the CLI, the server)."""
    if k is not None:
        return k
    return plan.default_k if plan is not None else DEFAULT_K


def check_plan(plan: Plan, k: int, index: PlanTarget) -> None:
    """Check a plan against one index view before searching; raises InputError saying what to change."""
    check_k(k)
    for before, after in zip(plan, plan[1:]):
        if after.candidates > before.passes_on:
            raise InputError(f"stage {after} keeps more candidates than stage {before} passes on: a funnel only narrows")
    _check_lexical(plan, index)
    for stage in plan:
        index.check_layer(stage.layer)
        if stage.encoder is not None:
            index.check_query_encoder(stage.encoder)
    depths = [None if index.is_full_depth(stage.layer) else stage.layer for stage in plan]
    for shallower, deeper in zip(depths, depths[1:]):
        if deeper is not None and (shallower is None or deeper < shallower):
            # Each stage rescores what the one before proposed with a model at least as deep.
            raise InputError(
                f"stages must not go back to a shallower layer ({deeper} after {shallower or 'the full model'}): order the stages by depth"
            )
    first = plan[0].resolved_dim(index.dim)
    exact_scan = first == index.dim and index.is_full_depth(plan[0].layer)  # every index can scan its full vectors
    if not exact_scan and not index.has_shortlist(first, plan[0].layer):
        have = ", ".join(map(str, index.shortlist_dims))
        raise InputError(
            f"the first stage scores at {first} dims but this index has shortlists at: {have} (or start at full dims, an exact scan)"
        )
    for stage in plan:
        if stage.resolved_dim(index.dim) > index.dim:
            raise InputError(f"stage {stage} asks for {stage.dim} dims but the index has {index.dim}")
    if plan[-1].candidates < k:
        raise InputError(f"k={k} but the last stage keeps only {plan[-1].candidates}: raise its candidates or lower k")


def _check_lexical(plan: Plan, index: PlanTarget) -> None:
    if any(stage.fusion for stage in plan[:-1]):
        raise InputError("only the last stage may fuse rankings (e.g. 64:400+bm25:50,full:10+rrf)")
    if plan[-1].fusion and not plan[0].lexical:
        raise InputError(f"+{plan[-1].fusion} fuses the dense ranking with the BM25 one: add +bm25:N to the first stage")
    if not plan.is_lexical:
        return
    if any(stage.lexical for stage in plan[1:]):
        raise InputError(f"only the first stage may add {LEXICAL} candidates (e.g. 64:400+bm25:50,full:10)")
    if len(plan) == 1:
        raise InputError(f"{LEXICAL} candidates are rescored by the next stage: add one, e.g. {plan[0]},full:10")
    if not index.has_lexical:
        raise InputError(
            f"this index keeps no lexical index, so {LEXICAL} candidates cannot be added: rebuild it locally with "
            "`funnel index --lexical` (Qdrant collections keep none)"
        )


def check_k(k: object) -> None:
    """InputError unless ``k`` is a whole number of at least 1 (a string or 2.5 is refused, not rounded)."""
    if not is_whole(k):
        raise InputError(f"k must be a whole number, not {k!r} ({type(k).__name__})")
    if k < 1:  # type: ignore[operator]
        raise InputError(f"k must be at least 1, not {k}")


def is_whole(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
