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
