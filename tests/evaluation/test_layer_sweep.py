"""The harness sweeping layers: shallow shortlists, full rescoring, query-encoding cost per stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from funnel.corpus import open_corpus
from funnel.errors import InputError
from funnel.evaluation.harness import EvalOptions, evaluate
from funnel.indexes.builder import IndexConfig, build_index
from funnel.indexes.shortlist import make_spec


@pytest.fixture(scope="module")
def cranfield_files(data_dir: Path) -> tuple[Path, Path]:
    folder = data_dir / "cranfield"
    return folder / "queries.jsonl", folder / "qrels" / "test.tsv"


@pytest.fixture(scope="module")
def layered_index(tmp_path_factory, cranfield_parquet, encoder) -> Path:
    path = tmp_path_factory.mktemp("layer-sweep") / "cranfield"
    return build_index(open_corpus(cranfield_parquet), encoder, path, IndexConfig(shortlists=(make_spec(64),), layers=(2, 4)))


@pytest.fixture(scope="module")
def report(layered_index, cranfield_files, encoder):
    queries, qrels = cranfield_files
    return evaluate(
        layered_index,
        model=encoder,
        options=EvalOptions(
            queries=queries,
            qrels=qrels,
            metrics=("ndcg@10", "recall@100"),
            dims=(64,),
            shortlists=(150,),
            layers=(2,),
            plans=("2:64:150,4:full:120,full:100", "2:full:100"),
            repeats=1,
            encode_sample=3,
            command="pytest",
        ),
    )


def rows(report):
    return {row.name: row for row in report.rows}


def test_a_layer_grid_beside_the_dims_grid(report):
    assert {"exact", "64:150,full:100", "2:64:150,full:100"} <= set(rows(report))


def test_shortlisting_everything_at_a_shallow_layer_then_rescoring_equals_exact(report):
    exact, layered = rows(report)["exact"], rows(report)["2:64:150,full:100"]
    assert layered.means["ndcg@10"] == pytest.approx(exact.means["ndcg@10"], abs=1e-3)
    # The shallow model alone ranks differently: the layers matter.
    assert rows(report)["2:full:100"].means["ndcg@10"] != pytest.approx(exact.means["ndcg@10"], abs=1e-3)


def test_query_encoding_is_counted_per_stage_with_continuation(report):
    full_flops = report.encoding.flops_mean
    chain = rows(report)["2:64:150,4:full:120,full:100"]
    assert [(step["layer"], step["layers_added"]) for step in chain.stage_encoding] == [(2, 2), (4, 2), (6, 2)]
    assert chain.encode_layers == 6 and chain.encode_flops == pytest.approx(full_flops)
    shallow = rows(report)["2:full:100"]
    assert shallow.encode_layers == 2 and shallow.encode_flops == pytest.approx(full_flops * 2 / 6)
    assert shallow.encode_ms is not None and shallow.encode_ms > 0 and set(report.encoding.layer_ms) >= {2, 6}
    assert "query layers" in report.table() and "(+2)" in report.stage_table()


def test_a_layer_the_index_lacks(layered_index, cranfield_files, encoder):
    queries, qrels = cranfield_files
    with pytest.raises(InputError, match="not of layer 3: rebuild it with --layers 3"):
        evaluate(
            layered_index,
            model=encoder,
            options=EvalOptions(queries=queries, qrels=qrels, dims=(64,), shortlists=(50,), layers=(3,), repeats=1, encode_sample=1),
        )
