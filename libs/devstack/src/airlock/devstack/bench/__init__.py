"""Benchmarks behind ``airlock bench`` / ``make bench``.

Each suite is a module in this package with a ``run(options) -> list[Measurement]`` function,
registered in :data:`SUITES`. ``options``: ``quick`` (shorter runs), ``rates`` (offered loads
for the load-driven suites, or ``None``) and ``run`` (the
:class:`~airlock.devstack.bench.report.BenchRun` being written: a suite may leave structured
data in ``run.data[<suite>]`` for the report). Targets are checked here, by measuring, never
by timed assertions in tests. Figures are reported as rates, ratios and percentiles from one run; the machine is
shared and noisy, so :func:`machine_note` is printed with every table.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Measurement:
    """One measured figure, optionally against a target.

    Attributes:
        suite: The suite that measured it (``audit``, ``redactor``…).
        name: What was measured, e.g. ``sealing throughput``.
        value: The figure.
        unit: Its unit, e.g. ``events/s`` or ``ms``.
        target: The target, if the issue sets one.
        higher_is_better: Direction of the target comparison.
        note: Conditions worth knowing (sizes, concurrency…).
    """

    suite: str
    name: str
    value: float
    unit: str
    target: float | None = None
    higher_is_better: bool = True
    note: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the target is met (``None`` without a target)."""
        if self.target is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form, including whether the target was met."""
        return {**asdict(self), "met": self.met}


Suite = Callable[[dict[str, Any]], list[Measurement]]


def machine_note() -> str:
    """The machine the figures come from."""
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, shared and noisy"


class StolenCpu:
    """The share of CPU time the hypervisor gave to other guests while a measurement ran.

    On a shared virtual machine the tail of a latency distribution follows the host's load more
    than the code's: a p99 measured while 10 % of the CPU was stolen says little about the code.
    Reads ``/proc/stat``; elsewhere :meth:`share` is ``None``.
    """

    def __init__(self, source: Path = Path("/proc/stat")) -> None:
        self._source = source
        self._start = self._read()

    def _read(self) -> tuple[int, int] | None:
        try:
            fields = self._source.read_text().splitlines()[0].split()[1:]
        except (OSError, IndexError):
            return None
        ticks = [int(value) for value in fields[:8]]  # user nice system idle iowait irq softirq steal
        return (ticks[7] if len(ticks) > 7 else 0), sum(ticks)

    def share(self) -> float | None:
        """Stolen ticks over all ticks since this object was made, in percent."""
        end = self._read()
        if self._start is None or end is None or end[1] <= self._start[1]:
            return None
        return 100.0 * (end[0] - self._start[0]) / (end[1] - self._start[1])


def format_table(rows: Sequence[Measurement]) -> str:
    """A fixed-width table of measurements with target verdicts."""
    header = ("suite", "measurement", "value", "unit", "target", "met", "note")
    body = []
    for row in rows:
        target = "" if row.target is None else ("≥ " if row.higher_is_better else "≤ ") + f"{row.target:g}"
        met = {None: "", True: "yes", False: "NO"}[row.met]
        body.append((row.suite, row.name, f"{row.value:,.2f}", row.unit, target, met, row.note))
    widths = [max(len(str(line[i])) for line in (header, *body)) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)) for line in (header, *body)
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def suites() -> dict[str, Suite]:
    """Registered suites by name (imported lazily: each may load heavy dependencies)."""
    from importlib import import_module

    registered: dict[str, Suite] = {}
    for name, module in SUITES.items():
        registered[name] = import_module(module).run
    return registered


#: Suite name → module implementing ``run``. Add yours here.
SUITES: dict[str, str] = {
    "audit": "airlock.devstack.bench.audit",
    "redactor": "airlock.devstack.bench.redactor",
    "llm-worker": "airlock.devstack.bench.llm_worker",
    "e2e": "airlock.devstack.bench.e2e",
    "stages": "airlock.devstack.bench.stages",
    "litellm": "airlock.devstack.bench.peer",
}
