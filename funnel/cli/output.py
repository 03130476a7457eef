"""Shared printing helpers for the CLI: JSON for programs, short lines for people."""

from __future__ import annotations

import json
import sys
from typing import Any

from funnel.formatting import human_bytes  # noqa: F401  (re-exported for the commands)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def snippet(text: str, width: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def rotation_lines(manifest: Any) -> list[str]:
    """One line per depth: the basis chosen and why (with the measured prefix agreement)."""
    rotation = manifest.rotation
    if rotation is None:
        return ["rotation   none (index built before rotations: the model's order)"]
    if not rotation.decision:
        return [f"rotation   none ({'--rotation none' if rotation.requested == 'none' else 'not fitted'}: the model's order)"]
    lines = []
    for key, record in rotation.decision.items():
        where = "" if key == "full" else f" (layer {key})"
        method = "pca" if record.get("method") == "pca" else "none (the model's order)"
        lines.append(f"rotation{where}   {method} [{rotation.requested}]: {record.get('reason', '')}")
        agreement = record.get("agreement")
        if agreement:
            dims = sorted(agreement["model_order"], key=int)
            pairs = ", ".join(f"{dim}-d {agreement['model_order'][dim]:.3f} → {agreement['rotated'][dim]:.3f}" for dim in dims)
            lines.append(f"           {agreement['measure']} on {agreement['queries']} corpus queries, model order → rotated: {pairs}")
    return lines
