"""Whatever bytes, headers and field values reach ingest, each record ends in exactly one accounted way.

Property (hypothesis, at the handler: thousands of inputs in seconds): ``process`` never raises
and returns one outcome per record that is exactly one of

* accepted — one envelope on ``accepted`` and the lifecycle RECEIVED → ACCEPTED;
* refused — one dead letter holding the original bytes with its error code and reason, and
  the lifecycle RECEIVED → REJECTED with that same code (a reply only when authenticated);
* moved — the same bytes to the record's home request partition, nothing else (it enters
  the lifecycle there).

The same kinds of poison go through the real broker in the integration tests: bytes that are
not JSON and JSON of the wrong schema (``tests/integration/test_mesh.py``), a non-UTF-8 header
and bad signatures (``tests/integration/test_ingest.py``), oversized prompts
(``tests/integration/test_ingest.py``, ``tests/integration/test_redactor.py``).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from airlock.core import headers as h
from airlock.core.lifecycle import State
from airlock.core.signing import is_field
from airlock.core.stage import Incoming, Outcome
from airlock.ingest.noise import counts_by_code
from tests.unit.test_ingest_handler import TOPICS, Harness

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
FIELDS = ("request_id", "client_id", "tenant", "model", "messages", "reply_to", "use_case", "params", "metadata")
HEADER_NAMES = st.sampled_from([h.CLIENT_ID, h.KEY_ID, h.TIMESTAMP, h.SIGNATURE, h.REQUEST_ID, h.REPLY_TO, "x-other"])


@st.composite
def documents(draw: st.DrawFn, harness: Harness) -> dict[str, Any]:
    """A request document with some fields dropped, some replaced by random JSON, maybe extra keys."""
    document: dict[str, Any] = harness.request()
    for name in FIELDS:
        choice = draw(st.sampled_from(["keep", "keep", "drop", "random"]))
        if choice == "drop":
            document.pop(name, None)
        elif choice == "random":
            document[name] = draw(JSON_VALUES)
    document.update(draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=2)))
    return document


def hostile_bodies(harness: Harness) -> st.SearchStrategy[bytes]:
    """Bodies that once escaped the per-record checks: deep nesting, lone surrogates, NaN."""
    lone_surrogate = json.dumps(harness.request(messages=[{"role": "user", "content": "hi \ud800"}])).encode()
    return st.one_of(
        st.integers(201, 60_000).map(lambda depth: b"[" * depth),
        st.integers(201, 5_000).map(lambda depth: b'{"messages":' * depth),
        st.just(lone_surrogate),
        st.just(lone_surrogate.replace(b"\\ud800", b"\\udfff\\ud800")),
        st.just(json.dumps(harness.request(params={"temperature": float("nan")})).encode()),
    )


@st.composite
def records(draw: st.DrawFn, harness: Harness) -> Incoming:
    kind = draw(st.sampled_from(["bytes", "hostile", "document", "valid"]))
    if kind == "bytes":
        body: bytes | dict[str, Any] = draw(st.binary(max_size=600))
    elif kind == "hostile":
        body = draw(hostile_bodies(harness))
    elif kind == "document":
        body = draw(documents(harness))
    else:
        body = harness.request()
    extra = tuple(draw(st.lists(st.tuples(HEADER_NAMES, st.binary(max_size=24)), max_size=3)))
    if draw(st.booleans()):
        request_id = body.get("request_id") if isinstance(body, dict) else None
        return harness.signed(
            body,
            request_id=request_id if isinstance(request_id, str) and is_field(request_id) else "fuzz-1",
            extra_headers=extra,
            partition=draw(st.sampled_from([None, None, 0, 1, 2])),  # None: its home partition
        )
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return harness.incoming(raw, extra, partition=draw(st.integers(0, 2)))


def accounted(record: Incoming, outcome: Outcome) -> str:
    """How the record ended: ``accepted``, ``refused`` or ``moved`` (asserting it is exactly one)."""
    topics = [r.topic for r in outcome.records]
    states = [(e.from_state, e.to_state) for e in outcome.events if e.kind == "transition"]
    if topics == [record.topic] and not outcome.events:
        [moved] = outcome.records
        assert moved.value == record.value and moved.partition != record.partition
        return "moved"
    if TOPICS.accepted in topics:
        assert topics.count(TOPICS.accepted) == 1 and TOPICS.dlq not in topics
        assert states == [(None, State.RECEIVED), (State.RECEIVED, State.ACCEPTED)]
        return "accepted"
    dead = [r for r in outcome.records if r.topic == TOPICS.dlq]
    assert len(dead) == 1, f"neither accepted nor refused: {topics}"
    assert dead[0].value == record.value, "the dead letter keeps the original bytes"
    headers = dict(dead[0].headers)
    assert headers[h.DLQ_REASON] and headers[h.ERROR_CODE]
    assert set(topics) <= {TOPICS.dlq, TOPICS.reply_topic("billing"), TOPICS.ingest_seen}
    if not states:  # unauthenticated: a dead letter, counted in the partition's noise tally
        assert topics[0] == TOPICS.dlq and set(topics[1:]) <= {TOPICS.ingest_seen}
        assert not [e for e in outcome.events if e.kind == "transition"]
        return "unauthenticated"
    assert states == [(None, State.RECEIVED), (State.RECEIVED, State.REJECTED)]
    assert outcome.events[-1].details.error_code == headers[h.ERROR_CODE].decode()
    return "refused"


def assert_noise_summed_up(harness: Harness, outcomes: list[Outcome], endings: list[str]) -> None:
    """Once the window passes, one notice covers every unauthenticated record, with its codes."""
    unauthenticated = [o for o, ending in zip(outcomes, endings, strict=True) if ending == "unauthenticated"]
    assert not [e for outcome in outcomes for e in outcome.events if e.kind == "notice"], "no notice before its window"
    notices = [e for e in asyncio.run(harness.flush_noise()).events if e.kind == "notice"]
    if not unauthenticated:
        assert not notices
        return
    [notice] = notices
    assert notice.details.extra and notice.details.extra["count"] == len(unauthenticated)
    codes = Counter(dict(o.records[0].headers)[h.ERROR_CODE].decode() for o in unauthenticated)
    assert counts_by_code(notice.details) == dict(codes)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_input_ends_accepted_refused_or_moved_never_crashes(tmp_path: Path, data: st.DataObject) -> None:
    harness = Harness(tmp_path)
    batch = data.draw(st.lists(records(harness), min_size=1, max_size=4))

    results = asyncio.run(harness.handler.process(batch))

    assert len(results) == len(batch)
    endings = []
    for record, result in zip(batch, results, strict=True):
        assert isinstance(result, Outcome), f"{record!r} raised {result!r}"
        endings.append(accounted(record, result))
        event(endings[-1])
    harness.commit(results)
    assert_noise_summed_up(harness, list(results), endings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "poison",
    [b"[" * 4_000, "lone surrogate"],
    ids=["nested-4000-deep", "lone-surrogate"],
)
def test_a_poison_request_is_refused_alone_and_its_batch_goes_through(tmp_path: Path, poison: bytes | str) -> None:
    harness = Harness(tmp_path)
    if poison == "lone surrogate":
        poison = json.dumps(harness.request("poison", messages=[{"role": "user", "content": "x \ud800"}])).encode()
    assert isinstance(poison, bytes)
    batch = [
        harness.signed(harness.request()),
        harness.signed(poison, request_id="poison"),
        harness.signed(harness.request()),
    ]

    results = asyncio.run(harness.handler.process(batch))

    assert [accounted(record, result) for record, result in zip(batch, results, strict=True)] == [  # type: ignore[arg-type]
        "accepted",
        "refused",
        "accepted",
    ]
    assert results[1].events[-1].details.error_code == "malformed"  # type: ignore[union-attr]
