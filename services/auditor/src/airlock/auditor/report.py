"""Rendering a verification report: a terminal table, JSON, or a self-contained HTML page.

The same :class:`~airlock.auditor.verify.Report` is rendered whether it came from Kafka
(``airlock audit replay``) or from an exported bundle (``airlock audit verify``).
"""

from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airlock.auditor.timelines import Timeline
from airlock.auditor.verify import PartitionSummary, Report

UNKNOWN_TENANT = "(unknown)"


@dataclass
class TenantTotals:
    """What one tenant's selected requests add up to."""

    requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    input_tokens: int = 0
    output_tokens: int = 0
    masked: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "requests": self.requests,
            "outcomes": dict(self.outcomes),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "masked_entities": dict(self.masked),
            "errors": dict(self.errors),
            "models": dict(self.models),
        }


def outcome(timeline: Timeline) -> str:
    """The request's terminal state, ``in flight``, or ``notice`` for a timeline without transitions."""
    if not timeline.transitions:
        return "notice"
    return timeline.terminal.value if timeline.terminal else "in flight"


def tenant_totals(report: Report) -> dict[str, TenantTotals]:
    """Per tenant: requests by outcome, tokens, masked entity counts, error codes, models."""
    totals: dict[str, TenantTotals] = {}
    for timeline in report.timelines.values():
        if not timeline.transitions:
            continue
        tenant = totals.setdefault(timeline.tenant or UNKNOWN_TENANT, TenantTotals())
        tenant.requests += 1
        tenant.outcomes[outcome(timeline)] += 1
        for event in timeline.events:
            details = _mapping(event.get("details"))
            usage = _mapping(details.get("usage"))
            tenant.input_tokens += _count(usage.get("input_tokens"))
            tenant.output_tokens += _count(usage.get("output_tokens"))
            for entity, count in _mapping(details.get("entity_counts")).items():
                tenant.masked[entity] += _count(count)
            if details.get("error_code"):
                tenant.errors[str(details["error_code"])] += 1
            if details.get("model") and event.get("to_state") == "COMPLETED":
                tenant.models[str(details["model"])] += 1
    return dict(sorted(totals.items()))


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is an object, else empty: reports must survive tampered events."""
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    return value if type(value) is int else 0


def _transition(event: dict[str, Any]) -> str:
    if event.get("kind") == "notice":
        return "notice"
    return f"{event.get('from_state') or '∅'} → {event.get('to_state')}"


def event_facts(event: dict[str, Any]) -> dict[str, str]:
    """The notable details of one event, as short texts (empty when absent)."""
    details = _mapping(event.get("details"))
    usage = _mapping(details.get("usage"))
    masked = _mapping(details.get("entity_counts"))
    return {
        "model": str(details.get("model") or ""),
        "tokens": f"{usage.get('input_tokens', 0)}+{usage.get('output_tokens', 0)}" if usage else "",
        "masked": ", ".join(f"{k}:{v}" for k, v in sorted(masked.items())),
        "policy": str(details.get("policy_version") or ""),
        "error": str(details.get("error_code") or ""),
        "finish": str(details.get("finish_reason") or ""),
    }


def format_timeline(timelines: list[Timeline]) -> list[str]:
    """Human lines for request timelines: time, stage, transition, the notable details."""
    lines = []
    for timeline in timelines:
        lines.append(
            f"airlock id {timeline.airlock_id}  request {timeline.request_id}  "
            f"tenant {timeline.tenant or '-'}  client {timeline.client_id or '-'}  → {outcome(timeline)}"
        )
        for event in timeline.events:
            facts = event_facts(event)
            notes = [
                f"{name}={facts[key]}"
                for name, key in (
                    ("model", "model"),
                    ("policy_version", "policy"),
                    ("finish_reason", "finish"),
                    ("error_code", "error"),
                    ("masked", "masked"),
                    ("tokens", "tokens"),
                )
                if facts[key]
            ]
            lines.append(
                f"  {str(event.get('at', ''))[:23]}  {event.get('stage', ''):<10} {_transition(event):<24} "
                + " ".join(notes)
            )
    return lines


def _partition_line(summary: PartitionSummary) -> str:
    span = "no records" if summary.first_seq is None else f"seq {summary.first_seq}–{summary.last_seq}"
    if not summary.segment.to_end or summary.segment.first_seq > 1:
        span += f" (exported from seq {summary.segment.first_seq}{'' if summary.segment.to_end else ', cut'})"
    anchored = (
        f"vouched for up to seq {summary.anchored_seq} by {summary.anchored_time}"
        if summary.anchored_seq
        else "no valid checkpoint"
    )
    tail = f"; {summary.unanchored} newer record(s) not yet checkpointed" if summary.unanchored else ""
    return f"partition {summary.partition}: {span}, {anchored}{tail}"


def _verdict(report: Report) -> str:
    if report.ok:
        return "VALID"
    return "INVALID: integrity" if not report.integrity_ok else "INVALID: lifecycle"


def _request_counts(report: Report) -> str:
    counts = Counter(outcome(t) for t in report.timelines.values() if t.transitions)
    parts = [f"{count} {name}" for name, count in sorted(counts.items())]
    return (
        f"{sum(counts.values())} request(s): "
        + (", ".join(parts) or "none")
        + (f" (in-flight limit {report.max_in_flight_s:g} s)")
    )


def summary_lines(report: Report) -> list[str]:
    """The CloudTrail-style summary: scope, per-partition anchoring, counts, findings, verdict."""
    scope = report.selection.describe()
    filters = ", ".join(f"{k} {v}" for k, v in scope.items() if v) or "all requests"
    lines = [
        f"ledger {report.ledger or '-'}  read from {report.origin or '-'}  as of {report.as_of.isoformat()}",
        f"trusted keys: {', '.join(report.trusted_keys) or 'none'} ({report.key_source})",
        f"results requested for: {filters}",
    ]
    lines += [_partition_line(s) for s in report.partitions.values()]
    lines += [
        f"{report.valid}/{report.records} records valid",
        f"{report.checkpoints_valid}/{report.checkpoints} checkpoints valid"
        + (f", {report.witnessed} witnessed" if report.witness_present else ", no witness read"),
        _request_counts(report),
    ]
    if report.findings:
        lines.append(f"{len(report.findings)} finding(s):")
        for finding in report.findings:
            where = f"partition {finding.partition if finding.partition is not None else '-'}"
            where += f" seq {finding.seq if finding.seq is not None else '-'}"
            lines.append(f"  {finding.kind:<21} {where:<24} {finding.detail}")
    lines += [f"note: {note}" for note in report.notes]
    lines.append(_verdict(report))
    return lines


def render_table(report: Report) -> str:
    """Timelines of the selected requests, then the summary."""
    lines = format_timeline(list(report.timelines.values()))
    if lines:
        lines.append("")
    return "\n".join(lines + summary_lines(report)) + "\n"


def _timeline_dict(timeline: Timeline) -> dict[str, Any]:
    return {
        "airlock_id": timeline.airlock_id,
        "request_id": timeline.request_id,
        "tenant": timeline.tenant,
        "client_id": timeline.client_id,
        "outcome": outcome(timeline),
        "events": [
            {"partition": partition, "seq": seq, **event}
            for (partition, seq), event in zip(timeline.locations, timeline.events, strict=True)
        ],
    }


def as_json(report: Report) -> dict[str, Any]:
    """The whole report as JSON-friendly data."""
    return {
        "ledger": report.ledger,
        "origin": report.origin,
        "as_of": report.as_of.isoformat(),
        "key_source": report.key_source,
        "trusted_keys": report.trusted_keys,
        "selection": report.selection.describe(),
        "verdict": _verdict(report),
        "ok": report.ok,
        "integrity_ok": report.integrity_ok,
        "records": report.records,
        "valid": report.valid,
        "checkpoints": report.checkpoints,
        "checkpoints_valid": report.checkpoints_valid,
        "witnessed": report.witnessed if report.witness_present else None,
        "max_in_flight_s": report.max_in_flight_s,
        "partitions": [
            {
                "partition": s.partition,
                "records": s.records,
                "first_seq": s.first_seq,
                "last_seq": s.last_seq,
                "anchored_seq": s.anchored_seq,
                "unanchored": s.unanchored,
                "newest_unanchored": s.newest_unanchored,
            }
            for s in report.partitions.values()
        ],
        "findings": [f.as_dict() for f in report.findings],
        "notes": report.notes,
        "tenants": {name: totals.as_dict() for name, totals in tenant_totals(report).items()},
        "requests": [_timeline_dict(t) for t in report.timelines.values()],
    }


def render_json(report: Report) -> str:
    """:func:`as_json`, indented."""
    return json.dumps(as_json(report), indent=2, default=str) + "\n"


_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1d2330;max-width:80rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;width:100%}
th,td{border-bottom:1px solid #dde1e8;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f5f8;font-weight:600}
.ok{color:#0a6b2f;font-weight:700}.bad{color:#a4161a;font-weight:700}
.mono{font-family:ui-monospace,monospace;font-size:12px}
details{border:1px solid #dde1e8;border-radius:4px;margin:.4rem 0;padding:.3rem .6rem}
summary{cursor:pointer}
"""


def _cells(values: list[Any], header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}>{html.escape(str(v))}</{tag}>" for v in values) + "</tr>"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    return "<table>" + _cells(header, header=True) + "".join(_cells(row) for row in rows) + "</table>"


def render_html(report: Report) -> str:
    """A self-contained page (no scripts, no external resources): summary, findings, tenants, timelines."""
    verdict = _verdict(report)
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>Airlock audit report — {html.escape(report.ledger)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Airlock audit report — <span class={'ok' if report.ok else 'bad'}>{html.escape(verdict)}</span></h1>",
        "<pre class=mono>" + html.escape("\n".join(summary_lines(report))) + "</pre>",
        "<h2>Findings</h2>",
        _table(
            ["kind", "partition", "seq", "detail"],
            [[f.kind, f.partition if f.partition is not None else "", f.seq or "", f.detail] for f in report.findings],
        )
        if report.findings
        else "<p class=ok>None.</p>",
        "<h2>Totals per tenant</h2>",
    ]
    tenant_rows = []
    for name, totals in tenant_totals(report).items():
        tenant_rows.append(
            [
                name,
                totals.requests,
                ", ".join(f"{k} {v}" for k, v in sorted(totals.outcomes.items())),
                totals.input_tokens,
                totals.output_tokens,
                ", ".join(f"{k} {v}" for k, v in sorted(totals.masked.items())),
                ", ".join(f"{k} {v}" for k, v in sorted(totals.errors.items())),
                ", ".join(f"{k} {v}" for k, v in sorted(totals.models.items())),
            ]
        )
    parts.append(
        _table(
            ["tenant", "requests", "outcomes", "input tokens", "output tokens", "masked entities", "errors", "models"],
            tenant_rows,
        )
    )
    parts.append(f"<h2>Requests ({len(report.timelines)})</h2>")
    for timeline in report.timelines.values():
        title = (
            f"request {timeline.request_id or '-'} · tenant {timeline.tenant or '-'} · "
            f"{outcome(timeline)} · airlock id {timeline.airlock_id}"
        )
        rows = []
        for (partition, seq), event in zip(timeline.locations, timeline.events, strict=True):
            facts = event_facts(event)
            who = " / ".join(str(x) for x in (event.get("client_id"), event.get("stage")) if x)
            rows.append(
                [
                    event.get("at", ""),
                    who,
                    _transition(event),
                    facts["model"],
                    facts["tokens"],
                    facts["masked"],
                    facts["policy"],
                    facts["error"],
                    f"{partition}/{seq}",
                ]
            )
        parts.append(
            f"<details><summary>{html.escape(title)}</summary>"
            + _table(["when", "who", "what", "model", "tokens", "masked", "policy", "error", "ledger"], rows)
            + "</details>"
        )
    parts.append(f"<p class=mono>generated {html.escape(datetime.now(report.as_of.tzinfo).isoformat())}</p>")
    parts.append("</body></html>\n")
    return "".join(parts)


def render(report: Report, output_format: str) -> str:
    """Render in ``table``, ``json`` or ``html``."""
    renderers = {"table": render_table, "json": render_json, "html": render_html}
    return renderers[output_format](report)
