"""The results of one ``airlock bench`` run: ``results.md``, ``results.json`` and PNG plots.

Suites get the run's :class:`BenchRun` as ``options["run"]`` and leave structured data in
``run.data[<suite>]`` (steps, memory, stages…); the tables, plots and the Airlock/LiteLLM
comparison are built here from that data, so a suite only measures.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airlock.devstack.bench import Measurement, format_table, machine_note
from airlock.devstack.bench.load import StepResult

MIB = 1024 * 1024


@dataclass
class BenchRun:
    """One benchmark run: where its results go and what the suites left for the report.

    Attributes:
        out_dir: ``bench/results/<date>/`` by default.
        quick: Shorter runs (a smoke check, not figures to quote).
        data: Suite name → JSON-friendly data the suite measured.
        load_before: The 1/5/15-minute load averages when the run started.
        started: When the run started (UTC).
    """

    out_dir: Path
    quick: bool = False
    data: dict[str, Any] = field(default_factory=dict)
    load_before: tuple[float, ...] = field(default_factory=lambda: _loadavg())
    started: datetime = field(default_factory=lambda: datetime.now(UTC))


def _loadavg() -> tuple[float, ...]:
    try:
        return tuple(round(value, 2) for value in os.getloadavg())
    except OSError:
        return ()


def default_out_dir(root: Path | None = None) -> Path:
    """``bench/results/<UTC date>/`` under ``root`` (the current directory by default)."""
    return (root or Path.cwd()) / "bench" / "results" / datetime.now(UTC).strftime("%Y-%m-%d")


def _fmt(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def steps_table(steps: Sequence[StepResult]) -> str:
    """The end-to-end table: one row per step."""
    rows = []
    for step in steps:
        extra = step.extra
        sealed = extra.get("sealed", {})
        counts = (
            f"{extra['published']} / {extra['replies']} / {sealed.get('terminal', '–')}"
            if "published" in extra
            else f"{step.sent} / {step.answered} / –"
        )
        rows.append(
            (
                f"{step.model_ms:g}",
                f"{step.offered:g}" + (" (probe)" if extra.get("probe") else ""),
                _fmt(step.throughput),
                _fmt(extra.get("drained_per_s", math.nan)),
                _fmt(step.latency.p50),
                _fmt(step.latency.p95),
                _fmt(step.latency.p99),
                _fmt(step.overhead.p50),
                _fmt(step.overhead.p99),
                counts,
                _loss(extra, step),
                ", ".join(f"{k}: {v}" for k, v in step.errors.items()) or "–",
                "yes" if step.sustained else "no",
                _fmt(extra.get("load_1m", math.nan)),
            )
        )
    return markdown_table(
        (
            "model ms",
            "offered/s",
            "achieved/s",
            "drained/s",
            "e2e p50",
            "p95",
            "p99",
            "overhead p50",
            "overhead p99",
            "published / replies / sealed",
            "lost",
            "errors",
            "sustained",
            "load 1 min",
        ),
        rows,
    )


def _loss(extra: dict[str, Any], step: StepResult) -> str:
    """Requests lost (final count), and how many only arrived after their step ended."""
    loss = extra.get("loss", step.sent - step.ok)
    late = extra.get("loss_at_step_end", loss) - loss
    return f"{loss} ({late} late)" if late > 0 else str(loss)


def skipped_note(steps: Sequence[StepResult]) -> str:
    """Which listed rates were not run because a lower one saturated the system."""
    notes = [
        f"model {s.model_ms:g} ms: saturated at {s.offered:g} req/s, so {', '.join(f'{r:g}' for r in skipped)} "
        "req/s were not run (they would only pile up a backlog)"
        for s in steps
        if (skipped := s.extra.get("skipped_above"))
    ]
    return ("Skipped: " + "; ".join(notes) + ".") if notes else ""


def cpu_table(steps: Sequence[StepResult]) -> str:
    """CPU milliseconds per request per process group, per step."""
    services = sorted({name for step in steps for name in step.extra.get("cpu_ms_per_request", {})})
    if not services:
        return ""
    rows = [
        (f"{s.model_ms:g}", f"{s.offered:g}", *(_fmt(s.extra["cpu_ms_per_request"].get(n, math.nan)) for n in services))
        for s in steps
        if s.extra.get("cpu_ms_per_request")
    ]
    return markdown_table(("model ms", "offered/s", *services), rows)


def hops_table(steps: Sequence[StepResult]) -> str:
    """Where the time goes: p50 / p99 milliseconds of each hop between ledger timestamps, per step."""
    hops = [name for name in next((s.extra["hops_ms"] for s in steps if s.extra.get("hops_ms")), {})]
    if not hops:
        return ""
    rows = [
        (
            f"{s.model_ms:g}",
            f"{s.offered:g}",
            *(f"{_fmt(s.extra['hops_ms'][h]['p50'], 0)} / {_fmt(s.extra['hops_ms'][h]['p99'], 0)}" for h in hops),
        )
        for s in steps
        if s.extra.get("hops_ms")
    ]
    return markdown_table(("model ms", "offered/s", *hops), rows)


def memory_table(peaks: dict[str, dict[str, int]]) -> str:
    """Peak RSS (MiB) per process, one column per window."""
    windows = list(peaks)
    labels = sorted({label for window in peaks.values() for label in window})
    rows = [(label, *(_fmt(peaks[w].get(label, math.nan) / MIB, 0) for w in windows)) for label in labels]
    return markdown_table(("process", *(f"{w} (MiB)" for w in windows)), rows)


def comparison_rows(airlock: Sequence[StepResult], peer: Sequence[StepResult]) -> list[tuple[str, ...]]:
    """Airlock vs the peer at each (model latency, offered rate) both were driven at."""
    theirs = {(s.model_ms, s.offered): s for s in peer}
    rows: list[tuple[str, ...]] = []
    for ours in airlock:
        other = theirs.get((ours.model_ms, ours.offered))
        if other is None:
            continue
        rows.append(
            (
                f"{ours.model_ms:g}",
                f"{ours.offered:g}",
                _fmt(ours.throughput),
                _fmt(other.throughput),
                _fmt(_ratio(ours.throughput, other.throughput), 2),
                _fmt(ours.overhead.p50),
                _fmt(other.overhead.p50),
                _fmt(_ratio(ours.overhead.p50, other.overhead.p50), 2),
                _fmt(ours.overhead.p99),
                _fmt(other.overhead.p99),
                _fmt(_ratio(ours.overhead.p99, other.overhead.p99), 2),
            )
        )
    return rows


def _ratio(ours: float, theirs: float) -> float:
    if theirs in (0, None) or math.isnan(theirs) or math.isnan(ours):
        return math.nan
    return ours / theirs


def _steps(data: dict[str, Any] | None) -> list[StepResult]:
    return [StepResult.from_dict(step) for step in (data or {}).get("steps", [])]


def _pyplot() -> Any:
    """The pyplot module on matplotlib's file-only backend (no display here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_latency(airlock: Sequence[StepResult], peer: Sequence[StepResult], path: Path) -> Path:
    """Latency percentiles against offered load, one panel per model latency."""
    plt = _pyplot()
    models = sorted({s.model_ms for s in [*airlock, *peer]})
    figure, axes = plt.subplots(1, max(1, len(models)), figsize=(6 * max(1, len(models)), 4.5), squeeze=False)
    for axis, model_ms in zip(axes[0], models, strict=False):
        for system, steps, style in (("Airlock", airlock, "-"), ("LiteLLM + Presidio", peer, "--")):
            mine = sorted((s for s in steps if s.model_ms == model_ms), key=lambda s: s.offered)
            if not mine:
                continue
            rates = [s.offered for s in mine]
            for name, color in (("p50", "tab:blue"), ("p95", "tab:orange"), ("p99", "tab:red")):
                values = [getattr(s.latency, name) for s in mine]
                axis.plot(rates, values, style, marker="o", color=color, label=f"{system} {name}")
        axis.axhline(model_ms, color="grey", linewidth=0.8, linestyle=":", label="model latency")
        axis.set_yscale("log")
        axis.set_xscale("log")
        axis.set_xlabel("offered load (requests/s, log)")
        axis.set_ylabel("end-to-end latency (ms, log)")
        axis.set_title(f"fake model answering in {model_ms:g} ms")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    return _save(plt, figure, path)


def plot_throughput(airlock: Sequence[StepResult], peer: Sequence[StepResult], path: Path) -> Path:
    """Achieved against offered throughput (the diagonal is keeping up)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4.5))
    top = max((s.offered for s in [*airlock, *peer]), default=1.0)
    axis.plot([0, top], [0, top], color="grey", linewidth=0.8, linestyle=":", label="offered = achieved")
    for system, steps, style in (("Airlock", airlock, "-"), ("LiteLLM + Presidio", peer, "--")):
        for model_ms, color in zip(sorted({s.model_ms for s in steps}), ("tab:blue", "tab:green"), strict=False):
            mine = sorted((s for s in steps if s.model_ms == model_ms), key=lambda s: s.offered)
            axis.plot(
                [s.offered for s in mine],
                [s.extra.get("drained_per_s", s.throughput) for s in mine],
                style,
                marker="o",
                color=color,
                label=f"{system}, model {model_ms:g} ms",
            )
    axis.set_xlabel("offered load (requests/s)")
    axis.set_ylabel("replies/s (Airlock: drained, late replies included)")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7)
    return _save(plt, figure, path)


def plot_stages(stages: dict[str, Any], path: Path) -> Path:
    """Drain rate of each stage alone against its replicas."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4.5))
    by_stage: dict[str, list[tuple[int, float]]] = {}
    for row in stages.get("rows", []):
        by_stage.setdefault(row["stage"], []).append((row["replicas"], row["rate"]))
    for stage, points in sorted(by_stage.items()):
        points.sort()
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=stage)
    axis.set_xlabel("replicas (processes, on 2 shared cores)")
    axis.set_ylabel("records/s drained")
    axis.set_yscale("log")
    axis.set_xticks(sorted({p[0] for points in by_stage.values() for p in points}) or [1])
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7)
    return _save(plt, figure, path)


def write(run: BenchRun, rows: Sequence[Measurement], load_after: tuple[float, ...] | None = None) -> Path:
    """Write ``results.json``, ``results.md`` and the plots into ``run.out_dir``; return the Markdown path.

    Args:
        run: The run and what its suites left.
        rows: The headline measurements.
        load_after: Load averages at the end (default: now).
    """
    out = run.out_dir
    out.mkdir(parents=True, exist_ok=True)
    load_after = _loadavg() if load_after is None else load_after
    airlock, peer = _steps(run.data.get("e2e")), _steps(run.data.get("litellm"))
    plots: list[str] = []
    if airlock or peer:
        plots.append(plot_latency(airlock, peer, out / "latency-vs-load.png").name)
        plots.append(plot_throughput(airlock, peer, out / "throughput.png").name)
    if run.data.get("stages", {}).get("rows"):
        plots.append(plot_stages(run.data["stages"], out / "stages.png").name)
    document = {
        "started": run.started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "quick": run.quick,
        "machine": machine_note(),
        "load_average_before": run.load_before,
        "load_average_after": load_after,
        "measurements": [row.as_dict() for row in rows],
        "data": run.data,
        "plots": plots,
    }
    (out / "results.json").write_text(json.dumps(document, indent=2, default=_json_default) + "\n")
    markdown = render_markdown(run, rows, load_after, plots)
    path = out / "results.md"
    path.write_text(markdown)
    return path


def remeasure(data: dict[str, Any], stored: Sequence[Measurement]) -> list[Measurement]:
    """The headline rows again from the suites' data (e2e, stages, litellm), in the stored order.

    Suites whose rows are not derived from their data (audit, redactor, llm-worker) keep the
    stored rows, and so does a suite that failed or could not run.
    """
    from airlock.devstack.bench import e2e, peer, stages

    derived = {
        "e2e": lambda: e2e.measurements(data["e2e"]),
        "stages": lambda: stages.measurements(data["stages"]),
        "litellm": lambda: peer.measurements(data["litellm"], data.get("e2e")),
    }
    rows: list[Measurement] = []
    done: set[str] = set()
    for row in stored:
        suite = row.suite
        if suite not in derived or suite not in data or "error" in data[suite]:
            rows.append(row)
        elif suite not in done:
            rows += derived[suite]()
            done.add(suite)
    return rows


def rerender(out_dir: Path) -> Path:
    """Write ``results.md`` and the plots again from ``out_dir/results.json`` (no measuring).

    The headline rows of the e2e, stages and litellm suites are derived again from their
    data (see :func:`remeasure`), so a report written by an older version picks up new rows.

    Raises:
        FileNotFoundError: ``out_dir`` holds no ``results.json``.
    """
    document = json.loads((out_dir / "results.json").read_text())
    rows = [
        Measurement(
            suite=row["suite"],
            name=row["name"],
            value=math.nan if row["value"] is None else float(row["value"]),
            unit=row["unit"],
            target=row.get("target"),
            higher_is_better=bool(row.get("higher_is_better", True)),
            note=row.get("note", ""),
        )
        for row in document["measurements"]
    ]
    run = BenchRun(
        out_dir,
        quick=bool(document.get("quick")),
        data=document.get("data", {}),
        load_before=tuple(document.get("load_average_before") or ()),
        started=datetime.fromisoformat(document["started"]),
    )
    return write(run, remeasure(run.data, rows), tuple(document.get("load_average_after") or ()))


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def render_markdown(run: BenchRun, rows: Sequence[Measurement], load_after: tuple[float, ...], plots: list[str]) -> str:
    """The human report: machine, targets, then one section per suite that left data."""
    parts = [
        f"# Airlock benchmark results ({run.started:%Y-%m-%d})",
        "",
        f"- **Machine:** {machine_note()}; the broker, the fake model, every service and the load "
        "generator share these cores, and other work may have been running.",
        f"- **Load average** (1/5/15 min) before: {', '.join(map(str, run.load_before)) or 'n/a'}; "
        f"after: {', '.join(map(str, load_after)) or 'n/a'}.",
        f"- **Run:** `airlock bench{' --quick' if run.quick else ''}` started {run.started:%H:%M:%S} UTC"
        + (" — **quick mode: short steps, figures are a smoke check only**" if run.quick else "")
        + ".",
        "",
        "## Figures against the targets",
        "",
        "```",
        format_table(rows),
        "```",
        "",
    ]
    e2e, peer = run.data.get("e2e"), run.data.get("litellm")
    if e2e:
        parts += _e2e_section(e2e)
    if run.data.get("stages"):
        parts += _stages_section(run.data["stages"])
    if peer:
        parts += _peer_section(peer, e2e)
    if plots:
        parts += ["## Plots", "", *(f"![{name}]({name})" for name in plots), ""]
    parts += [
        "## Definitions",
        "",
        "- *Offered*: open loop, request *i* sent at start + i/rate whatever happened before; "
        "*latency*: from that scheduled time to the reply's arrival in the client (no coordinated omission).",
        "- *Achieved*: successful replies the client waited for / (last reply − first scheduled send); "
        "*drained* (Airlock): every reply of the step seen on the reply topic, late ones included, over the "
        "same span (an overloaded step's client gives up on replies that still come).",
        "- *Overhead*: end-to-end latency minus the fake model's configured latency (so it includes "
        "the HTTP round trip to the fake and, for Airlock, every Kafka hop and transaction).",
        "- *Sustained*: nothing lost or failed, achieved ≥ 95 % of offered, p99 < model latency + 1 s.",
        "- *Lost* (Airlock): published − min(replies on the reply topic, terminal states sealed in the "
        "ledger), counted again after the whole sweep drained; *late* = replied or sealed only after "
        "its step's wait ended (counted, not lost).",
        "",
    ]
    return "\n".join(parts)


def _e2e_section(e2e: dict[str, Any]) -> list[str]:
    steps = _steps(e2e)
    parts = [
        "## 1. End to end (Airlock)",
        "",
        f"Services: {', '.join(f'{k} ×{v}' for k, v in e2e.get('scale', {}).items())}; "
        f"{e2e.get('partitions')} partitions; {e2e.get('step_seconds')} s of load per step; signed requests "
        "through the SDK; published / replies / sealed = requests acknowledged by the broker / replies "
        "received / terminal states sealed in the ledger.",
        "",
        steps_table(steps),
        "",
        skipped_note(steps),
        "",
    ]
    hops = hops_table(steps)
    if hops:
        parts += [
            "Where the time goes: p50 / p99 ms between consecutive transition timestamps in the ledger "
            "(each hop holds the previous stage's commit, the next stage's fetch, its queue and its work):",
            "",
            hops,
            "",
        ]
    cpu = cpu_table(steps)
    if cpu:
        parts += [
            "CPU milliseconds per successful request, per process group (includes each process's idle "
            "cost over the step and its drain):",
            "",
            cpu,
            "",
        ]
    if e2e.get("memory"):
        parts += ["### Memory (peak resident set)", "", memory_table(e2e["memory"]), ""]
    leakage = e2e.get("leakage", {})
    if leakage.get("matched"):
        parts += [
            "### PII leakage through the whole mesh",
            "",
            f"{leakage['samples']} labeled prompts ({leakage['planted']} planted values) sent one at a time: "
            f"**{leakage['leakage_pct']:.2f} %** of planted values reached the model "
            f"({leakage.get('leaked_by_type')}); utility (must-survive words kept) {leakage['utility_pct']:.2f} %; "
            f"the caller's own values back in the answer: {leakage['restored_pct']:.2f} %.",
            "",
        ]
    profile = e2e.get("profile")
    if profile:
        parts += _profile_section(profile)
    return parts


def _profile_section(profile: dict[str, Any]) -> list[str]:
    if profile.get("error"):
        return ["### Profile", "", f"No profile: {profile['error']}", ""]
    rows = [(name, _fmt(share)) for name, share in profile.get("inclusive", [])]
    self_rows = [(name, _fmt(share)) for name, share in profile.get("self", [])]
    return [
        f"### Profile of the hottest stage: {profile['service']} (py-spy, {profile['samples']} samples "
        f"at {profile['rate']:g} req/s, model 300 ms)",
        "",
        "Functions on the stack (inclusive, % of samples):",
        "",
        markdown_table(("function", "%"), rows),
        "",
        "Functions on the CPU (self, % of samples):",
        "",
        markdown_table(("function", "%"), self_rows),
        "",
        f"Collapsed stacks: `{profile.get('raw')}`.",
        "",
    ]


def _stages_section(stages: dict[str, Any]) -> list[str]:
    rows = [
        (
            row["stage"],
            row["replicas"],
            row["records"],
            _fmt(row["rate"]),
            _fmt(row.get("cpu_ms_per_record", math.nan), 2),
            row.get("note", ""),
        )
        for row in stages.get("rows", [])
    ]
    return [
        "## 2. Per stage",
        "",
        stages.get("description", ""),
        "",
        markdown_table(("stage", "replicas", "records", "drained/s", "CPU ms/record", "note"), rows),
        "",
    ]


def _peer_section(peer: dict[str, Any], e2e: dict[str, Any] | None) -> list[str]:
    parts = ["## 3. Side by side: LiteLLM proxy + Presidio guardrail", ""]
    if peer.get("error"):
        return [*parts, f"**LiteLLM could not be run:** {peer['error']}", ""]
    parts += [peer.get("description", ""), "", steps_table(_steps(peer)), "", skipped_note(_steps(peer)), ""]
    rows = comparison_rows(_steps(e2e), _steps(peer))
    if rows:
        parts += [
            "Ratios Airlock / LiteLLM at the same offered load (throughput: higher is better; "
            "overhead: lower is better):",
            "",
            markdown_table(
                (
                    "model ms",
                    "offered/s",
                    "Airlock/s",
                    "LiteLLM/s",
                    "ratio",
                    "Airlock ovh p50",
                    "LiteLLM ovh p50",
                    "ratio",
                    "Airlock ovh p99",
                    "LiteLLM ovh p99",
                    "ratio",
                ),
                rows,
            ),
            "",
        ]
    ours, theirs = (e2e or {}).get("leakage", {}), peer.get("leakage", {})
    if ours.get("matched") and theirs.get("matched"):
        parts += [
            markdown_table(
                ("PII on the labeled set", "Airlock", "LiteLLM + Presidio", "ratio"),
                [
                    (
                        "leakage to the model (%)",
                        _fmt(ours["leakage_pct"], 2),
                        _fmt(theirs["leakage_pct"], 2),
                        _fmt(_ratio(ours["leakage_pct"], theirs["leakage_pct"]), 2),
                    ),
                    ("utility kept (%)", _fmt(ours["utility_pct"], 2), _fmt(theirs["utility_pct"], 2), ""),
                    (
                        "caller's values restored in the answer (%)",
                        _fmt(ours["restored_pct"], 2),
                        _fmt(theirs["restored_pct"], 2),
                        "",
                    ),
                ],
            ),
            "",
        ]
    if peer.get("memory"):
        parts += ["Memory (peak resident set):", "", memory_table(peer["memory"]), ""]
    if peer.get("caveats"):
        parts += ["**Not like for like:**", "", *(f"- {c}" for c in peer["caveats"]), ""]
    return parts
