"""Lifecycle judgement, filters, partial exports and the three report formats."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from airlock.auditor.bundle import read_bundle, read_manifest
from airlock.auditor.chain import ChainHead, canonical
from airlock.auditor.report import render_html, render_json, render_table, tenant_totals
from airlock.auditor.timelines import Selection
from airlock.auditor.verify import Evidence, Report, verify
from airlock.core.settings import TopicSettings
from airlock.core.topics import Topics
from airlock.devstack.bench.audit import START, audit_records, sealed_ledger
from airlock.devstack.cli import app

REQUESTS = 30  # 3 rejected, 3 blocked, 3 failed, 21 delivered


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("report")
    return asyncio.run(sealed_ledger(root / "witness", audit_records(REQUESTS, partitions=2), every=10))


def report_of(sealed, selection: Selection | None = None, **options) -> Report:
    evidence = Evidence(
        ledger=sealed.sealed.ledger,
        partitions=sealed.sealed.partitions,
        checkpoints=sealed.sealed.checkpoints,
        keys=sealed.keys.public_keys(),
        as_of=options.pop("as_of", START + timedelta(minutes=1)),
    )
    return verify(evidence, selection, **options)


def test_every_request_is_reconstructed_with_its_outcome(sealed) -> None:
    report = report_of(sealed)
    assert report.ok, report.findings
    outcomes = sorted(t.terminal.value for t in report.timelines.values())
    assert outcomes.count("DELIVERED") == 21 and outcomes.count("FAILED") == 3
    assert outcomes.count("REJECTED") == 3 and outcomes.count("BLOCKED") == 3


def test_tenant_totals_add_up_tokens_masks_errors_and_outcomes(sealed) -> None:
    totals = tenant_totals(report_of(sealed))
    assert sorted(totals) == ["acme", "globex", "initech"]
    assert sum(t.requests for t in totals.values()) == REQUESTS
    assert sum(t.input_tokens for t in totals.values()) == 21 * 57
    assert sum(t.output_tokens for t in totals.values()) == 21 * 21
    # Every request that got past ingest was masked: 2 persons and an email each.
    assert sum(t.masked["PERSON"] for t in totals.values()) == 2 * (REQUESTS - 3)
    assert sum(t.errors["model_unavailable"] for t in totals.values()) == 3
    # Requests 0, 10 and 20 are rejected; tenants rotate acme, globex, initech.
    assert [totals[name].outcomes["REJECTED"] for name in ("acme", "globex", "initech")] == [1, 1, 1]


def test_filters_choose_requests_while_integrity_covers_everything(sealed) -> None:
    everything = report_of(sealed)
    by_tenant = report_of(sealed, Selection(tenant="globex"))
    assert {t.tenant for t in by_tenant.timelines.values()} == {"globex"}
    assert len(by_tenant.timelines) == REQUESTS // 3
    assert by_tenant.records == everything.records and by_tenant.valid == everything.valid
    one = report_of(sealed, Selection(request_ids=frozenset({"req-0000004"})))
    assert [t.request_id for t in one.timelines.values()] == ["req-0000004"]
    window = report_of(sealed, Selection(since=START + timedelta(milliseconds=95), until=START + timedelta(seconds=1)))
    assert sorted(t.request_id for t in window.timelines.values()) == [f"req-{i:07d}" for i in range(10, REQUESTS)]


def test_a_request_in_flight_is_fine_until_the_stated_age_then_incomplete() -> None:
    sealer = asyncio.run(sealed_ledger(None, audit_records(5, open_requests=1)))
    evidence = Evidence(ledger=sealer.sealed.ledger, partitions=sealer.sealed.partitions)
    evidence.as_of = START + timedelta(seconds=60)
    young = verify(evidence, max_in_flight_s=300)
    assert young.ok and len(young.in_flight) == 1
    evidence.as_of = START + timedelta(seconds=301)
    old = verify(evidence, max_in_flight_s=300)
    assert [f.kind for f in old.findings] == ["incomplete_lifecycle"]
    assert "still REDACTED" in old.findings[0].detail and "in-flight limit 300 s" in old.findings[0].detail
    assert old.integrity_ok  # a lifecycle problem, not an integrity one


def test_an_illegal_or_skipped_transition_is_reported_where_it_was_sealed() -> None:
    base = {"airlock_id": "a1", "request_id": "r1", "stage": "x", "kind": "transition", "at": START.isoformat()}
    steps = [
        {**base, "event_id": "1", "from_state": None, "to_state": "RECEIVED"},
        {**base, "event_id": "2", "from_state": "ACCEPTED", "to_state": "REDACTED"},  # ACCEPTED never recorded
    ]
    head, records = ChainHead(), []
    for offset, event in enumerate(steps):
        head, raw = head.seal(0, canonical(event), ("audit", 0, offset), "2025-06-01T12:00:00Z")
        records.append(raw)
    report = verify(Evidence(ledger="l", partitions={0: records}, as_of=START))
    assert [(f.kind, f.partition, f.seq) for f in report.findings] == [("illegal_transition", 0, 2)]
    assert "RECEIVED → REDACTED" in report.findings[0].detail


@pytest.mark.parametrize("to_state", ["SHIPPED", ["DELIVERED"], {"x": 1}, 7])
def test_a_malformed_state_is_an_illegal_transition_not_a_crash(to_state) -> None:
    event = {
        "airlock_id": "a",
        "request_id": ["r"],
        "tenant": {"t": 1},
        "stage": "x",
        "kind": "transition",
        "event_id": "e",
        "details": {"usage": ["x"], "entity_counts": {"PERSON": "two"}, "error_code": 3},
    }
    _, raw = ChainHead().seal(0, canonical({**event, "to_state": to_state}), ("audit", 0, 0), "2025-06-01T12:00:00Z")
    report = verify(Evidence(ledger="l", partitions={0: [raw]}))
    assert [(f.kind, f.seq) for f in report.findings] == [("illegal_transition", 1)]
    assert render_html(report) and render_table(report) and json.loads(render_json(report))


def test_table_has_the_cloudtrail_style_summary(sealed) -> None:
    text = render_table(report_of(sealed))
    assert re.search(r"^(\d+)/\1 records valid$", text, re.MULTILINE)
    assert re.search(r"^(\d+)/\1 checkpoints valid, \1 witnessed$", text, re.MULTILINE) is None  # no witness read
    assert "30 request(s): 3 BLOCKED, 21 DELIVERED, 3 FAILED, 3 REJECTED" in text
    assert text.rstrip().endswith("VALID")


def test_json_report_carries_findings_requests_and_tenants(sealed) -> None:
    document = json.loads(render_json(report_of(sealed, Selection(tenant="acme"))))
    assert document["ok"] is True and document["records"] == document["valid"]
    assert document["selection"]["tenant"] == "acme"
    assert {r["tenant"] for r in document["requests"]} == {"acme"}
    assert document["tenants"]["acme"]["requests"] == 10
    first = document["requests"][0]["events"][0]
    assert {"partition", "seq", "stage", "to_state", "at"} <= set(first)


def test_html_report_is_self_contained_with_timelines_and_tenant_totals(sealed) -> None:
    page = render_html(report_of(sealed))
    assert page.startswith("<!doctype html>") and "</html>" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page and "src=" not in page
    assert page.count("<details>") == REQUESTS
    assert "Totals per tenant" in page and "globex" in page
    assert "PERSON:2" in page and "57+21" in page and "builtin-1" in page and "model_unavailable" in page


def test_html_escapes_what_it_shows() -> None:
    event = {
        "airlock_id": "a",
        "request_id": "<img src=x onerror=alert(1)>",
        "stage": "x",
        "kind": "notice",
        "event_id": "e",
        "at": START.isoformat(),
    }
    _, raw = ChainHead().seal(0, canonical(event), ("audit", 0, 0), "2025-06-01T12:00:00Z")
    page = render_html(verify(Evidence(ledger="l", partitions={0: [raw]})))
    assert "<img" not in page and "&lt;img" in page


def test_export_with_a_filter_holds_a_verifiable_segment(sealed, tmp_path: Path) -> None:
    bundle = tmp_path / "acme"
    sealed.export(bundle, Selection(request_ids=frozenset({"req-0000013"})), exported_at=START + timedelta(minutes=1))
    manifest = read_manifest(bundle)
    report = verify(read_bundle(bundle), manifest.selection)
    assert report.ok, report.findings
    assert [t.request_id for t in report.timelines.values()] == ["req-0000013"]
    full = sum(len(v) for v in sealed.sealed.partitions.values())
    assert 0 < report.records < full
    assert all(p.anchored_seq == p.last_seq for p in report.partitions.values())


def test_replay_and_verify_commands_write_reports_in_every_format(sealed, tmp_path: Path) -> None:
    bundle = tmp_path / "all"
    sealed.export(bundle, exported_at=START + timedelta(minutes=1))
    runner = CliRunner()
    for output_format in ("table", "json", "html"):
        out = tmp_path / f"report.{output_format}"
        result = runner.invoke(
            app, ["audit", "verify", str(bundle), "--format", output_format, "--out", str(out), "--trust-bundled-keys"]
        )
        assert result.exit_code == 0, result.output
        assert "VALID" in result.output and out.stat().st_size > 0
    assert json.loads((tmp_path / "report.json").read_text())["ok"] is True
    bad = runner.invoke(app, ["audit", "verify", str(bundle), "--format", "pdf"])
    assert bad.exit_code == 2


def test_evidence_topics_keep_records_forever_by_default_and_transit_topics_do_not() -> None:
    topics = Topics()
    specs = {
        spec.name: spec.configs
        for spec in [*topics.specs(TopicSettings()), topics.reply_spec("billing", TopicSettings())]
    }
    for evidence in (topics.ledger, topics.checkpoints, topics.audit):
        assert specs[evidence]["retention.ms"] == "-1"
        assert specs[evidence]["cleanup.policy"] == "delete"  # never compacted: every record is evidence
    for transit in (
        topics.requests,
        topics.accepted,
        topics.redacted,
        topics.completions,
        topics.reply_topic("billing"),
    ):
        assert 0 < int(specs[transit]["retention.ms"]) <= 7 * 24 * 3600 * 1000
    custom = {spec.name: spec.configs for spec in Topics().specs(TopicSettings(ledger_retention_ms=86_400_000))}
    assert custom[topics.ledger]["retention.ms"] == "86400000"
