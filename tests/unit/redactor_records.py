"""Records the redactor's handlers take in unit tests: accepted requests and completed answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airlock.core.lifecycle import State
from airlock.core.models import ChatMessage, Completion, Envelope, LLMRequest
from airlock.core.stage import Incoming, Outcome


def accepted(*contents: str, tenant: str = "acme", use_case: str = "default", offset: int = 1) -> Incoming:
    """An ACCEPTED request with one user message per content, as ingest forwards it."""
    now = datetime.now(UTC)
    envelope = Envelope(
        airlock_id=f"a-{offset}",
        state=State.ACCEPTED,
        request=LLMRequest(
            request_id=f"r-{offset}",
            client_id="billing",
            tenant=tenant,
            use_case=use_case,
            model="gpt-4o-mini",
            messages=[ChatMessage(role="user", content=c) for c in contents],
            reply_to="t.responses.billing",
        ),
        received_at=now,
        deadline=now + timedelta(seconds=60),
    )
    return Incoming(topic="t.accepted", partition=0, offset=offset, value=envelope.to_bytes(), timestamp_ms=1)


def completed(redacted: Outcome, answer: str | None = None) -> Incoming:
    """The model's answer to a redacted request (by default, it repeats the masked prompt)."""
    envelope = Envelope.model_validate_json(redacted.records[0].value)
    content = answer if answer is not None else f"You said: {envelope.request.messages[-1].content}"
    done = envelope.model_copy(
        update={"state": State.COMPLETED, "completion": Completion(content=content, finish_reason="stop", model="m")}
    )
    return Incoming(topic="t.completions", partition=0, offset=9, value=done.to_bytes(), timestamp_ms=1)
