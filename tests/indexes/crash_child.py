"""Child process for the crash tests: stream saved documents and vectors into ``write_index`` and
SIGKILL itself at a chosen point. Not a test module (pytest collects only test_*.py).

Usage: python crash_child.py WORKDIR TARGET POINT NUMBER [--resume]
POINT: before-checkpoint | mid-vectors | mid-documents | finishing | before-manifest | before-swap | none
NUMBER: which call of the patched step dies (1-based).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crash_data import batches, config  # noqa: E402

from funnel.indexes import builder, segment, shortlist  # noqa: E402


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def patch(owner: object, name: str, number: int, before=None) -> None:
    """Replace owner.name so that its number-th call dies (``before`` runs first, e.g. half a write)."""
    original = getattr(owner, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == number:
            if before is not None:
                before(*args, **kwargs)
            die()
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def half_vectors(self, data: bytes) -> None:
    self._vectors.write(data[: len(data) // 2])
    self._vectors.flush()


def half_documents(self, documents, vectors) -> None:
    # A batch's documents reach the stream part; its vectors and checkpoint never do.
    if self._part_writer is not None:
        self._part_writer.write(documents)
        self._part.flush()


def main() -> None:
    workdir, target, point, number = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    resume = "--resume" in sys.argv
    if point == "before-checkpoint":
        patch(segment.SegmentWriter, "_write_checkpoint", number)
    elif point == "mid-vectors":
        patch(segment.SegmentWriter, "_append_vectors", number, before=half_vectors)
    elif point == "mid-documents":
        patch(segment.SegmentWriter, "append", number, before=half_documents)
    elif point == "finishing":
        patch(shortlist, "build_file", number)
    elif point == "before-manifest":
        patch(builder, "write_manifest_atomically", number)
    elif point == "before-swap":
        patch(builder, "_swap_into_place", number)
    builder.write_index(batches(workdir), target, model="cranfield-vectors", dim=384, config=config(), resume=resume)


if __name__ == "__main__":
    main()
