"""Whatever reaches the audit topic, every genuine event is sealed and the ledger verifies clean.

Property (hypothesis, at the sealing handler): a stream of genuine audit events with hostile
records mixed in — random bytes, deep nesting, lone surrogates, NaN, events with fields
replaced by random JSON — never raises out of ``process``; every genuine event is sealed
exactly once, in order; and the ledger, its checkpoints and the witness verify with no
integrity finding.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airlock.auditor.chain import parse_record
from airlock.auditor.verify import verify
from airlock.devstack.bench.audit import Sealer, audit_records, dev_keys
from tests.unit.test_audit_sealing import evidence

GENUINE = audit_records(6)[0]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


@st.composite
def hostile(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "nested", "surrogate", "nan", "field"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "nested":
        return b"[" * draw(st.integers(201, 20_000))
    event: dict[str, Any] = json.loads(draw(st.sampled_from(GENUINE)))
    if kind == "surrogate":
        event["request_id"] = "x\ud800"
        return json.dumps(event).encode()
    if kind == "nan":
        return json.dumps({**event, "latency": float("nan")}).encode()
    name = draw(st.sampled_from(sorted(event)))
    event[name] = draw(JSON_VALUES)
    event["event_id"] = f"forged-{draw(st.integers(0, 10**6))}"  # not a replay of a genuine one
    return json.dumps(event).encode()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile_audit_records_never_cost_a_genuine_event_or_the_ledgers_integrity(
    tmp_path_factory: Any, data: st.DataObject
) -> None:
    root: Path = tmp_path_factory.mktemp("witness")
    stream = list(GENUINE)
    for _ in range(data.draw(st.integers(1, 6))):
        stream.insert(data.draw(st.integers(0, len(stream))), data.draw(hostile()))
    sealer = Sealer(dev_keys(), root, every=4)

    batch = data.draw(st.integers(1, 8))

    async def seal() -> None:  # one loop: the notary's witness writer lives on it
        await sealer.feed(0, stream, batch=batch)
        await sealer.tick(0)

    asyncio.run(seal())

    sealed = [parse_record(raw).event["event_id"] for raw in sealer.sealed.partitions.get(0, [])]
    genuine_ids = [json.loads(raw)["event_id"] for raw in GENUINE]
    assert [event_id for event_id in sealed if event_id in genuine_ids] == genuine_ids
    assert len(sealed) == len(set(sealed))
    report = verify(evidence(sealer, root))
    assert report.integrity_ok, [finding.detail for finding in report.findings]
