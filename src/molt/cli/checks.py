"""Checks of command-line input every read-only command makes the same way: a clear
error on stderr and exit code 2, before anything talks to a cluster."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer
from rich.console import Console

errors = Console(stderr=True, soft_wrap=True)


def require_output_format(output: str) -> None:
    """``--output`` is ``table`` or ``json``."""
    if output not in ("table", "json"):
        errors.print(f"[red]error:[/red] --output must be table or json, not {output!r}")
        raise typer.Exit(2)


def require_kubeconfig(kubeconfig: Path | None) -> None:
    """A kubeconfig given on the command line exists (None: the default lookup)."""
    if kubeconfig is not None and not kubeconfig.is_file():
        errors.print(f"[red]error:[/red] kubeconfig {kubeconfig} does not exist", highlight=False)
        raise typer.Exit(2)


def require_writable_dir(directory: Path, option: str) -> None:
    """``directory`` exists (made when missing) and a file can be written in it; checked
    before a long run, so a mistyped ``--out`` costs a line, not the run and a traceback."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".molt-write-check-"):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        errors.print(
            f"[red]error:[/red] {option} {directory}: cannot write there: {reason}",
            highlight=False,
        )
        raise typer.Exit(2) from error
