"""Whatever reaches a stage's internal inputs, each record ends accounted for and none raises.

Properties (Hypothesis) over hostile records mixed with genuine ones — garbage, deep
nesting, lone surrogates, NaN, and genuine records with a field replaced or dropped:

- the redactor (accepted → redacted, completions → replies) and the llm-worker
  (redacted → completions) return an outcome for every record, never an exception; a
  record they cannot read is dead-lettered byte for byte with a notice; the genuine records
  of the batch go through as if alone;
- ingest's admission log and usage readers skip what they cannot read or authenticate and
  keep their state;
- a clients file of any content is either valid or refused with ``ClientsFileError``, and a
  refused edit leaves the previous version in force.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airlock.core.stage import Incoming, Outcome
from airlock.ingest.clients import ClientRegistry, ClientsFileError
from airlock.ingest.feeds import QuotaFeed
from airlock.redactor.detector import PiiDetector
from airlock.redactor.handlers import RedactHandler, RestoreHandler
from airlock.redactor.policy import PolicySet, default_policy
from airlock.redactor.redaction import Redactor
from tests.unit.hostile import hostile_records
from tests.unit.redactor_records import accepted, completed
from tests.unit.test_ingest_handler import clients
from tests.unit.test_llm_handler import Provider, handler
from tests.unit.test_llm_handler import incoming as redacted
from tests.unit.test_redactor_handlers import CONTEXT, MODEL, RING

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def mixed(data: st.DataObject, genuine: Incoming, hostile_count: int = 3) -> list[Incoming]:
    """``genuine`` with hostile records of the same topic around it, offsets in order."""
    values = [data.draw(hostile_records(genuine.value)) for _ in range(data.draw(st.integers(1, hostile_count)))]
    values.insert(data.draw(st.integers(0, len(values))), genuine.value)
    return [
        Incoming(topic=genuine.topic, partition=0, offset=n, value=value, timestamp_ms=1)
        for n, value in enumerate(values)
    ]


def assert_accounted(batch: list[Incoming], results: list[Any], genuine: bytes, forwarded_to: str) -> None:
    assert len(results) == len(batch)
    for record, result in zip(batch, results, strict=True):
        assert isinstance(result, Outcome), f"{record.value[:80]!r} raised {result!r}"
        assert result.events, "every record leaves an audit event"
        topics = [r.topic for r in result.records]
        if record.value == genuine:
            assert forwarded_to in topics, topics
        elif "t.dlq" in topics:
            [dead] = [r for r in result.records if r.topic == "t.dlq"]
            assert dead.value == record.value, "the dead letter keeps the original bytes"
        else:  # a mutation that is still a valid record: it went its normal way
            assert topics, "nothing lost"


@pytest.fixture(scope="module")
def redactor() -> tuple[RedactHandler, RestoreHandler]:
    engine = Redactor(PiiDetector(MODEL), PolicySet([default_policy()]))
    return RedactHandler(CONTEXT, engine, RING, max_prompt_chars=5_000), RestoreHandler(CONTEXT, RING, engine)


@FUZZ
@given(data=st.data())
def test_the_redactor_accounts_for_every_accepted_record(
    redactor: tuple[RedactHandler, RestoreHandler], data: st.DataObject
) -> None:
    redact, _ = redactor
    genuine = accepted("Hi, I am Jane Roe")
    batch = mixed(data, genuine)
    assert_accounted(batch, redact.process_sync(batch), genuine.value, "t.redacted")


@FUZZ
@given(data=st.data())
def test_the_redactor_accounts_for_every_completion(
    redactor: tuple[RedactHandler, RestoreHandler], data: st.DataObject
) -> None:
    redact, restore = redactor
    [outcome] = redact.process_sync([accepted("Hi, I am Jane Roe")])
    assert isinstance(outcome, Outcome)
    genuine = completed(outcome)
    batch = mixed(data, genuine)
    assert_accounted(batch, restore.process_sync(batch), genuine.value, "t.responses.billing")


@FUZZ
@given(data=st.data())
def test_the_llm_worker_accounts_for_every_redacted_record(data: st.DataObject) -> None:
    genuine = redacted()
    batch = mixed(data, genuine)
    results = asyncio.run(handler(Provider()).process(batch))
    assert_accounted(batch, list(results), genuine.value, "t.completions")


@FUZZ
@given(garbage=st.lists(st.binary(max_size=200) | hostile_records(b'{"kind": "settlement", "airlock_id": "a"}')))
def test_the_quota_feed_skips_what_it_cannot_read(garbage: list[bytes]) -> None:
    feed = QuotaFeed(kafka=None, topics=CONTEXT.topics, door=None)  # type: ignore[arg-type]
    for offset, value in enumerate(garbage):
        for tp in (TopicPartition(CONTEXT.topics.ingest_admissions, 0), TopicPartition(CONTEXT.topics.usage, 0)):
            feed._apply(tp, ConsumerRecord(tp.topic, 0, offset, 1, 1, b"k", value, None, 0, 0, []))
    assert feed.arbiter.in_flight("tenant", "acme") == 0


YAML_TEXT = st.text(max_size=300) | st.sampled_from(
    ["clients: []", "tenants: {a: {tokens_per_day: -1}}", "{", "clients: {x: {keys: {k: {secret: zz}}}}", "&a [*a]"]
)


@FUZZ
@given(text=YAML_TEXT)
def test_a_clients_file_of_any_content_is_valid_or_refused_and_the_last_good_stays(
    tmp_path_factory: Any, text: str
) -> None:
    path: Path = tmp_path_factory.mktemp("clients") / "clients.yaml"
    good = clients()
    good.save(path)
    registry = ClientRegistry(path)
    registry.load()
    path.write_text(text)
    try:
        changed = registry.refresh()
    except ClientsFileError:
        assert registry.refused and registry.current == good
    else:
        assert changed or registry.current == good
