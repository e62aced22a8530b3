"""``airlock bench``: measure against the issue targets and print a table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from airlock.devstack.cli.common import fail


def bench(
    names: Annotated[list[str] | None, typer.Argument(help="Suites to run (default: all).")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the measurements as JSON here.")] = None,
    quick: Annotated[bool, typer.Option(help="Smaller runs, for a smoke check.")] = False,
) -> None:
    """Run benchmark suites on this machine and print their figures against the targets."""
    from airlock.devstack.bench import format_table, machine_note, suites

    available = suites()
    chosen = names or list(available)
    unknown = [name for name in chosen if name not in available]
    if unknown:
        fail(f"unknown suite(s) {unknown}; available: {', '.join(available) or 'none'}")
    rows = []
    for name in chosen:
        typer.echo(f"running {name}…", err=True)
        rows.extend(available[name]({"quick": quick}))
    typer.echo(f"machine: {machine_note()}")
    typer.echo(format_table(rows))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps([row.as_dict() for row in rows], indent=2))
