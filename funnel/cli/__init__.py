"""The ``funnel`` command: a Typer app with one small module per command."""

from __future__ import annotations

import sys

import typer

from funnel.cli import add, compact, delete, evaluate, export, index, info, search, serve, train, tune, verify
from funnel.errors import FunnelError

app = typer.Typer(
    name="funnel",
    help="Two-stage retrieval on nested (Matryoshka) embeddings: shortlist small, rescore full.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for command in (index, search, info, serve, tune, evaluate, train, add, delete, compact, verify, export):
    command.register(app)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        app()
    except FunnelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        # The last guard: a file system that refuses (full disk, read-only, permissions) is the
        # user's to fix, so it gets one line too, never a traceback.
        from funnel.cli.output import os_error_line

        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
