"""Whether an index's queries may run on the 8-bit ONNX graph: measured, never assumed.

The 8-bit graph encodes a query in about 40% of the fp32 graph's time, but its vectors are not
the model's (cosine ~0.99 for MiniLM per channel; benchmarks/results/query-int8). The tuner encodes its calibration queries both ways, runs
the tuned plan with each, and takes int8 only where the int8 path's top-k agrees with the fp32
path's at the tuner's own target; the decision and its figures go in the manifest's plan entry
(``query_encoder``), where ``--query-encoder auto`` reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from funnel.agreement import recall_against
from funnel.encoders.choose import Precision, engine_name, load_query_encoder
from funnel.errors import ModelError
from funnel.search.plan import Plan
from funnel.search.run import run_funnel

if TYPE_CHECKING:
    from funnel.indexes.index import Index


def measure_query_precision(index: Index, model: str, plan: Plan, k: int, texts: Sequence[str], target_recall: float) -> dict[str, Any]:
    """The manifest's ``query_encoder`` record: the precision ``auto`` runs queries at, with the
    top-``k`` agreement of the int8 path with the fp32 path over ``texts`` under ``plan``."""
    if not texts:
        return {"precision": "fp32", "reason": "the calibration queries were vectors, not texts: int8 was not measured"}
    try:
        fp32_engine = load_query_encoder(model, "onnx")
        if engine_name(fp32_engine) != "onnx-fp32":
            return {"precision": "fp32", "reason": f"the model runs on the {engine_name(fp32_engine)} engine, which has no int8 form"}
        fp32 = fp32_engine.encode(list(texts))
        int8 = load_query_encoder(model, "onnx-int8").encode(list(texts))
    except ModelError as exc:
        return {"precision": "fp32", "reason": f"no ONNX graph: {exc}"}
    found_fp32 = run_funnel(index, fp32, plan, k, texts=texts).positions
    found_int8 = run_funnel(index, int8, plan, k, texts=texts).positions
    agreement = float(np.mean(recall_against(found_int8, found_fp32)))
    precision: Precision = "int8" if agreement >= target_recall else "fp32"
    return {
        "precision": precision,
        "int8_agreement": round(float(agreement), 4),
        "target_recall": target_recall,
        "int8_cosine_mean": round(float(np.mean(np.sum(fp32 * int8, axis=1))), 4),
        "queries": len(texts),
        "k": k,
    }
