"""``airlock bench``: measure against the issue targets, print a table and write the results."""

from __future__ import annotations

import json
import math
import traceback
from pathlib import Path
from typing import Annotated

import typer

from airlock.devstack.cli.common import fail


def bench(
    names: Annotated[list[str] | None, typer.Argument(help="Suites to run (default: all).")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the measurements as JSON here.")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(help="Where results.md, results.json and the plots go (default: bench/results/<UTC date>/)."),
    ] = None,
    quick: Annotated[bool, typer.Option(help="Smaller runs, for a smoke check.")] = False,
    rates: Annotated[
        str | None, typer.Option(help="Offered loads of the e2e and litellm suites, e.g. 25,50,100,200.")
    ] = None,
    rerender: Annotated[
        Path | None,
        typer.Option(help="Measure nothing: rewrite results.md and the plots of this results directory."),
    ] = None,
) -> None:
    """Run benchmark suites on this machine, print their figures against the targets, write a report."""
    from airlock.devstack.bench import Measurement, format_table, machine_note, suites
    from airlock.devstack.bench.report import BenchRun, default_out_dir, write

    if rerender is not None:
        from airlock.devstack.bench.report import rerender as rewrite

        try:
            typer.echo(f"results: {rewrite(rerender)}")
        except FileNotFoundError:
            fail(f"no results.json in {rerender}")
        return

    available = suites()
    chosen = names or list(available)
    unknown = [name for name in chosen if name not in available]
    if unknown:
        fail(f"unknown suite(s) {unknown}; available: {', '.join(available) or 'none'}")
    try:
        offered = [float(rate) for rate in rates.split(",")] if rates else None
    except ValueError:
        fail(f"--rates must be numbers separated by commas (got {rates!r})")
    run = BenchRun(out_dir or default_out_dir(), quick=quick)
    rows = []
    failed = []
    for name in chosen:
        typer.echo(f"running {name}…", err=True)
        try:
            rows.extend(available[name]({"quick": quick, "run": run, "rates": offered}))
        except Exception as error:  # one broken suite must not cost the others' figures
            traceback.print_exc()
            failed.append(name)
            run.data.setdefault(name, {})["error"] = f"{type(error).__name__}: {error}"
            rows.append(Measurement(name, "suite failed", math.nan, "", note=f"{type(error).__name__}: {error}"[:160]))
        # Written after every suite, so an interrupted run keeps the figures of the suites done.
        write(run, rows)
    typer.echo(f"machine: {machine_note()}")
    typer.echo(format_table(rows))
    report = write(run, rows)
    typer.echo(f"results: {report} (+ results.json and plots in {report.parent})")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps([row.as_dict() for row in rows], indent=2))
    if failed:
        fail(f"suite(s) failed: {', '.join(failed)} (the others' figures are in {report})")
