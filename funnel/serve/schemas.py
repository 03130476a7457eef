"""The JSON a server takes and gives, as pydantic models: they validate requests and document the
API at /docs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SearchRequest(BaseModel):
    """One query (``query``) or several (``queries``); ``k`` hits each, through ``stages``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"query": "play a puzzle game over the network", "k": 5}],
            # Exactly one of the two (the handler answers 400 otherwise); the fields alone cannot say it.
            "oneOf": [
                {"required": ["query"], "properties": {"query": {"type": "string"}}},
                {"required": ["queries"], "properties": {"queries": {"type": "array"}}},
            ],
        },
    )

    query: str | None = Field(None, description="One query. Give this or `queries`.")
    queries: list[str] | None = Field(None, description="Several queries, searched as one batch.")
    k: int | None = Field(None, description="Hits per query [default: 10, or the last stage's candidates when `stages` is given].")
    stages: str | None = Field(None, description="A funnel plan such as `64:200,full:10` [default: the index's plan].")
    index: str | None = Field(None, description="Which served index [default: the first one named at start].")


class HitOut(BaseModel):
    id: str
    score: float
    rank: int
    title: str | None
    text: str
    metadata: dict[str, Any]


class QueryHits(BaseModel):
    query: str
    hits: list[HitOut]


class StageTiming(BaseModel):
    stage: str = Field(description="The stage as written in a plan, e.g. `64:200`.")
    dim: int
    scored: int = Field(description="Candidates scored per query (the first stage: the index size).")
    kept: int
    ms: float = Field(description="Search time of this stage for the whole batch.")
    encode_ms: float = Field(description="Query encoding this stage added (layered plans only).")


class Timings(BaseModel):
    encode_ms: float = Field(description="Query encoding, all depths.")
    stages: list[StageTiming]
    search_ms: float = Field(description="Encoding and every stage, as the worker ran them.")
    batched_queries: int = Field(description="Queries searched in the same batch (this request's and those of requests waiting with it).")
    total_ms: float = Field(description="From the request's arrival to the response's body, queueing included.")


class SearchResponse(BaseModel):
    index: str
    version: int = Field(description="The index generation that answered (changes with add, delete, compact).")
    k: int
    plan: str
    results: list[QueryHits] = Field(description="One entry per query, in request order.")
    timings: Timings


class Health(BaseModel):
    status: str = Field(description='"ok", or "degraded" while an index answers from an older version (see `lagging`).')
    indexes: list[str]
    lagging: dict[str, str] = Field(description="Served name → why it still answers from an older version.")


class ErrorOut(BaseModel):
    detail: str = Field(description="One line saying what was wrong.")
