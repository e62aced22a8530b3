"""Benchmark report writing, profile summaries, ledger tallies and drain rates (pure parts)."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from airlock.devstack.bench import Measurement
from airlock.devstack.bench.e2e import leakage_figures, one_at_a_time, sweep
from airlock.devstack.bench.load import StepResult, Summary
from airlock.devstack.bench.profiling import hottest, summarize_collapsed
from airlock.devstack.bench.report import (
    BenchRun,
    comparison_rows,
    default_out_dir,
    memory_table,
    rerender,
    write,
)
from airlock.devstack.bench.stages import drain_rate
from airlock.devstack.bench.watch import LedgerTally, hop_times, per_service, service_of, until_reached
from airlock.devstack.eval.dataset import Planted, Sample


def _step(system: str, model_ms: float, offered: float, throughput: float, overhead_p50: float) -> StepResult:
    latency = Summary(100, model_ms + overhead_p50, model_ms + 2 * overhead_p50, model_ms + 3 * overhead_p50, 0)
    overhead = Summary(100, overhead_p50, 2 * overhead_p50, 3 * overhead_p50, 0)
    extra = {"published": 100, "replies": 100, "sealed": {"terminal": 100}, "loss": 0} if system == "airlock" else {}
    extra["cpu_ms_per_request"] = {"redactor": 20.0, "kafka": 10.0}
    return StepResult(system, model_ms, offered, 1.0, 100, 100, 100, {}, throughput, latency, overhead, 1.0, extra)


def test_default_out_dir_is_dated_under_bench_results(tmp_path: Path) -> None:
    out = default_out_dir(tmp_path)
    assert out.parent == tmp_path / "bench" / "results"
    assert len(out.name) == 10 and out.name[4] == "-"


def test_write_produces_markdown_json_and_plots(tmp_path: Path) -> None:
    run = BenchRun(tmp_path / "out")
    run.data["e2e"] = {
        "scale": {"redactor": 2},
        "partitions": 6,
        "step_seconds": 1,
        "steps": [_step("airlock", 300, 50, 49.0, 40.0).as_dict(), _step("airlock", 300, 100, 60.0, 900.0).as_dict()],
        "memory": {"at rest": {"redactor-0": 200 * 2**20}, "under load, model 300 ms": {"redactor-0": 210 * 2**20}},
        "leakage": {
            "matched": True,
            "samples": 10,
            "planted": 20,
            "leakage_pct": 1.0,
            "leaked_by_type": {},
            "utility_pct": 99.0,
            "restored_pct": 95.0,
        },
        "profile": {
            "service": "redactor",
            "rate": 50,
            "samples": 10,
            "self": [("f (a.py)", 50.0)],
            "inclusive": [("g (b.py)", 90.0)],
            "raw": "profile-redactor.txt",
        },
    }
    run.data["litellm"] = {
        "description": "peer",
        "steps": [_step("litellm", 300, 50, 49.5, 20.0).as_dict()],
        "caveats": ["a queue against an HTTP proxy"],
        "leakage": {
            "matched": True,
            "samples": 10,
            "planted": 20,
            "leakage_pct": 4.0,
            "leaked_by_type": {},
            "utility_pct": 90.0,
            "restored_pct": 10.0,
        },
    }
    run.data["stages"] = {
        "rows": [{"stage": "ingest", "replicas": 1, "records": 10, "rate": 300.0, "cpu_ms_per_record": 2.0, "note": ""}]
    }
    rows = [Measurement("e2e", "max sustained, model 300 ms", 50, "req/s", 200, True)]
    markdown_path = write(run, rows)

    markdown = markdown_path.read_text()
    assert "max sustained, model 300 ms" in markdown and "NO" in markdown  # the missed target shows
    assert "| 300 | 50 | 49.0 |" in markdown  # the e2e step row
    assert "a queue against an HTTP proxy" in markdown
    assert "Load average" in markdown
    assert "f (a.py)" in markdown
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert document["measurements"][0]["met"] is False
    assert document["data"]["e2e"]["steps"][0]["offered"] == 50
    for name in ("latency-vs-load.png", "throughput.png", "stages.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in markdown


def test_rerender_rebuilds_the_report_from_results_json(tmp_path: Path) -> None:
    run = BenchRun(tmp_path, load_before=(1.5, 2.0, 3.0))
    late = _step("airlock", 300, 50, 49.0, 40.0)
    late.extra.update(loss=0, loss_at_step_end=3)
    run.data["e2e"] = {"steps": [late.as_dict()]}
    rows = [Measurement("e2e", "requests lost (all steps)", 0, "requests", 0.0, False)]
    write(run, rows, load_after=(4.0, 5.0, 6.0))
    (tmp_path / "results.md").unlink()
    (tmp_path / "latency-vs-load.png").unlink()

    markdown = rerender(tmp_path).read_text()
    assert "requests lost (all steps)" in markdown and "yes" in markdown  # the verdict survives the JSON
    assert "max sustained, model 300 ms" in markdown  # e2e's rows are derived again from its data
    assert "before: 1.5, 2.0, 3.0; after: 4.0, 5.0, 6.0" in markdown  # the run's own load, not today's
    assert "| 0 (3 late) |" in markdown
    assert (tmp_path / "latency-vs-load.png").exists()
    with pytest.raises(FileNotFoundError):
        rerender(tmp_path / "nothing-here")


def test_peer_failure_is_reported_not_hidden(tmp_path: Path) -> None:
    run = BenchRun(tmp_path)
    run.data["litellm"] = {"error": "installing LiteLLM failed: no network"}
    markdown = write(run, []).read_text()
    assert "LiteLLM could not be run:** installing LiteLLM failed: no network" in markdown


def test_comparison_rows_pair_the_same_load_and_divide() -> None:
    ours = [_step("airlock", 300, 50, 48.0, 40.0), _step("airlock", 300, 200, 80.0, 5000.0)]
    theirs = [_step("litellm", 300, 50, 48.0, 20.0)]
    [row] = comparison_rows(ours, theirs)
    assert row[:2] == ("300", "50")
    assert row[4] == "1.00"  # throughput ratio
    assert row[7] == "2.00"  # overhead p50 ratio


def test_memory_table_in_mebibytes() -> None:
    table = memory_table({"at rest": {"kafka": 512 * 2**20}, "under load": {"kafka": 640 * 2**20}})
    assert "| kafka | 512 | 640 |" in table


def test_profile_summary_counts_self_and_inclusive_shares() -> None:
    lines = [
        "main (app.py:1);handle (airlock/redactor/handlers.py:10);pipe (site-packages/spacy/language.py:99) 30",
        "main (app.py:1);handle (airlock/redactor/handlers.py:10) 10",
        "main (app.py:1);poll (site-packages/aiokafka/consumer.py:5) 60",
        "garbage line",
    ]
    summary = summarize_collapsed(lines)
    assert summary["samples"] == 100
    assert dict(summary["self"])["poll (aiokafka/consumer.py)"] == 60
    assert dict(summary["inclusive"])["handle (airlock/redactor/handlers.py)"] == 40
    assert dict(summary["inclusive"])["main (app.py)"] == 100


def test_hottest_service_ignores_the_broker_and_the_fake() -> None:
    assert hottest({"kafka": 50.0, "redactor": 30.0, "ingest": 5.0, "fake-openai": 99.0}) == "redactor"


def _ledger_record(request_id: str, to_state: str, kind: str = "transition", at: float = 0.0) -> SimpleNamespace:
    stamp = datetime.fromtimestamp(at, UTC).isoformat()
    event = {"kind": kind, "request_id": request_id, "to_state": to_state, "at": stamp}
    return SimpleNamespace(value=json.dumps({"seq": 1, "event": event}).encode())


def test_ledger_tally_counts_terminal_states_and_duplicates() -> None:
    tally = LedgerTally()
    for record in (
        _ledger_record("a", "RECEIVED"),
        _ledger_record("a", "DELIVERED"),
        _ledger_record("b", "FAILED"),
        _ledger_record("b", "FAILED"),
        _ledger_record("c", "DELIVERED", kind="notice"),
        SimpleNamespace(value=b"not json"),
    ):
        tally.add(record)  # type: ignore[arg-type]
    summary = tally.summary(["a", "b", "c", "d"])
    assert summary == {"terminal": 2, "by_state": {"DELIVERED": 1, "FAILED": 1}, "missing": 2, "duplicates": 1}


def test_service_grouping() -> None:
    assert service_of("redactor-1") == "redactor"
    assert service_of("llm-worker-0") == "llm-worker"
    assert service_of("fake-openai") == "fake-openai"
    assert per_service({"redactor-0": 1.0, "redactor-1": 2.0, "kafka": 4.0}) == {"redactor": 3.0, "kafka": 4.0}


def test_drain_rate_uses_the_middle_of_the_arrivals() -> None:
    # 100 records at 50/s, with a slow start and a long tail outside the middle 80 %
    times = [0.0] * 5 + [10.0 + i / 50 for i in range(90)] + [100.0] * 5
    assert drain_rate(times) == pytest.approx(50, rel=0.05)
    assert math.isnan(drain_rate([1.0, 2.0]))


def test_leakage_figures_score_what_the_model_saw_and_what_came_back() -> None:
    samples = [
        Sample("s-1", "question", "Mail jane@example.com now", pii=(Planted("EMAIL_ADDRESS", "jane@example.com"),)),
        Sample("s-2", "question", "Call Bob Stone", pii=(Planted("PERSON", "Bob Stone"),)),
    ]
    seen = ["Mail <EMAIL_ADDRESS_1> now", "Call Bob Stone"]
    replies = ["Mail jane@example.com now", "Call <PERSON>"]
    figures = leakage_figures(samples, seen, replies)
    assert figures["matched"] is True
    assert figures["leakage_pct"] == pytest.approx(50.0)
    assert figures["leaked_by_type"] == {"PERSON": 1}
    assert figures["restored_pct"] == pytest.approx(50.0)
    assert leakage_figures(samples, seen[:1], replies)["matched"] is False


class _Fake:
    """Stands in for the fake model's control API: a log of received chat bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, object]] = []

    def configure(self, **changes: object) -> dict[str, object]:
        return dict(changes)

    def clear(self) -> None:
        self.bodies.clear()

    def received(self) -> list[dict[str, object]]:
        return list(self.bodies)


def test_one_at_a_time_keeps_samples_aligned_when_a_request_never_reaches_the_model() -> None:
    samples = [
        Sample("s-1", "question", "Mail jane@example.com", pii=(Planted("EMAIL_ADDRESS", "jane@example.com"),)),
        Sample("s-2", "question", "Call Bob Stone", pii=(Planted("PERSON", "Bob Stone"),)),
        Sample("s-3", "question", "Ring Ann Lee", pii=(Planted("PERSON", "Ann Lee"),)),
    ]
    fake = _Fake()

    async def ask(text: str) -> str:
        if "Bob" in text:
            return ""  # failed before the model: nothing received for this sample
        if "Ann" in text:  # a retry: the model received it twice, the last body counts
            fake.bodies.append({"messages": [{"role": "user", "content": "Ring Ann Lee"}]})
        fake.bodies.append({"messages": [{"role": "user", "content": text.replace("Ann Lee", "<PERSON>")}]})
        return "ok"

    figures = asyncio.run(one_at_a_time(fake, samples, ask))
    assert figures["matched"] is True
    # s-1 leaked its address; s-2 reached nothing; s-3's last body was redacted.
    assert figures["leaked_by_type"] == {"EMAIL_ADDRESS": 1}
    assert figures["leakage_pct"] == pytest.approx(100 / 3)
    assert figures["answered"] == 2


def test_sweep_skips_rates_above_a_saturated_step_and_then_probes_lower() -> None:
    capacity = 30.0
    tried: list[float] = []

    async def step(rate: float, model_ms: float) -> StepResult:
        tried.append(rate)
        achieved = min(rate, capacity)
        ok = round(rate)  # every request answered: only the achieved rate and the tail decide
        summary = Summary(ok, model_ms + 10, model_ms + 20, model_ms + (30 if rate <= capacity else 5000), 0)
        return StepResult("airlock", model_ms, rate, 1.0, round(rate), ok, ok, {}, achieved, summary, summary, 1.0)

    results = asyncio.run(sweep(step, 0.0, (25.0, 50.0, 100.0, 200.0), max_probes=2, ceiling=1000.0))
    # 100 req/s achieves 30 < half of it: 200 is skipped and said so; probes go between 25 and 50.
    assert tried[:3] == [25.0, 50.0, 100.0]
    assert 200.0 not in tried
    assert all(25.0 < probe < 50.0 for probe in tried[3:]) and len(tried) == 5
    assert next(r for r in results if r.offered == 100.0).extra["skipped_above"] == [200.0]


def test_until_reached_waits_for_slow_progress_and_gives_up_on_a_stall() -> None:
    counter = {"value": 0}

    def creeping() -> int:  # one step per poll: slower than the target, never idle
        counter["value"] += 1
        return counter["value"]

    assert asyncio.run(until_reached(creeping, 20, idle_timeout_s=0.05, poll_s=0.01)) == 20
    stuck = asyncio.run(until_reached(lambda: 3, 20, idle_timeout_s=0.05, poll_s=0.01))
    assert stuck == 3


def test_e2e_rows_show_the_light_floor_and_a_target_load_that_was_not_run() -> None:
    from airlock.devstack.bench import e2e

    light = _step("airlock", 300, e2e.LIGHT_RATE, 2.0, 40.0)
    light.seconds = 50.0  # 100 requests at 2/s: all of them answered
    saturated = _step("airlock", 300, 25, 5.0, 20_000.0)
    saturated.extra["skipped_above"] = [50.0, 100.0, 200.0]
    rows = {row.name: row for row in e2e.measurements({"steps": [light.as_dict(), saturated.as_dict()]})}
    assert rows["overhead p50 at 2/s (light), model 300 ms"].value == pytest.approx(40.0)
    missed = rows["overhead p99 at 50/s, model 300 ms"]
    assert math.isnan(missed.value) and missed.met is False and "not run" in missed.note
    assert rows["max sustained, model 300 ms"].value == pytest.approx(2.0)  # the light step kept up


def test_peer_rows_give_airlock_over_litellm_ratios_at_the_same_load() -> None:
    from airlock.devstack.bench import peer

    ours = [_step("airlock", 300, 50, 49.0, 40.0).as_dict()]
    theirs = [_step("litellm", 300, 50, 49.5, 20.0).as_dict()]
    rows = {row.name: row for row in peer.measurements({"steps": theirs}, {"steps": ours})}
    assert rows["ratio Airlock/LiteLLM overhead p50 at 50/s, model 300 ms"].value == pytest.approx(2.0)
    assert rows["ratio Airlock/LiteLLM overhead p99 at 50/s, model 300 ms"].value == pytest.approx(2.0)
    assert peer.measurements({"error": "no index"}, None)[0].name == "LiteLLM could not be run"


def test_hop_times_line_up_the_client_and_the_ledger_per_delivered_request() -> None:
    tally = LedgerTally()
    for state, at in (("ACCEPTED", 100.010), ("REDACTED", 100.030), ("COMPLETED", 100.330), ("DELIVERED", 100.360)):
        tally.add(_ledger_record("a", state, at=at))  # type: ignore[arg-type]
    tally.add(_ledger_record("b", "ACCEPTED", at=100.0))  # type: ignore[arg-type]  # never delivered
    hops = hop_times(tally.entered, {"a": 100.0, "b": 100.0}, {"a": 100.365}, ["a", "b"])
    assert [round(values[0]) for values in hops.values()] == [10, 20, 300, 30, 5]
    assert all(len(values) == 1 for values in hops.values())  # b has no complete path: left out


def test_stolen_cpu_is_the_steal_share_of_all_ticks_since_start(tmp_path: Path) -> None:
    from airlock.devstack.bench import StolenCpu

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 0 0 0 50 0 0\ncpu0 1 2 3\n")
    stolen = StolenCpu(stat)
    stat.write_text("cpu  160 0 70 900 0 0 0 70 0 0\ncpu0 1 2 3\n")  # +200 ticks, 20 of them stolen

    assert stolen.share() == 10.0
    assert StolenCpu(tmp_path / "missing").share() is None
