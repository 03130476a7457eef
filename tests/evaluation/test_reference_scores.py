"""The published reference scores, reproduced on the whole Cranfield set (pytest -m data).

all-MiniLM-L6-v2 with exact cosine search scores NDCG@10 0.3817 on Cranfield (../shared/NOTES.md);
a default index (rotated) must give the same at full dims, and its 64-dim prefix must keep at
least 91% of it on its own, the figure the rotation was built for.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from funnel.evaluation.harness import EvalOptions, evaluate


@pytest.mark.data
@pytest.mark.slow
def test_default_index_reproduces_the_reference_and_nests(shared_data: Path, encoder, tmp_path: Path) -> None:
    options = EvalOptions(plans=("64:100",), metrics=("ndcg@10",), index_dir=tmp_path, repeats=1, encode_sample=5)
    report = evaluate(shared_data / "cranfield", model=encoder, options=options)
    exact = report.reference.means["ndcg@10"]
    assert exact == pytest.approx(0.3817, abs=0.0005)
    prefix_alone = next(row for row in report.rows if row.stages == "64:100")
    assert prefix_alone.means["ndcg@10"] / exact >= 0.91
