"""Ingest's handler: request record in; accepted envelope or structured refusal out."""

from __future__ import annotations

import contextlib
import json

from airlock.core import headers as h
from airlock.core.errors import ErrorCode, StageError
from airlock.core.lifecycle import State
from airlock.core.models import AuditDetails, Envelope, LLMRequest, utcnow
from airlock.core.stage import (
    Incoming,
    Outcome,
    StageContext,
    airlock_id_for,
    deadline_after,
    prompt_digest,
)
from airlock.ingest.settings import IngestSettings
from airlock.ingest.validation import addressing, parse_request


def request_details(request: LLMRequest, source: str) -> AuditDetails:
    """What the audit log keeps about a request: its shape and a digest, never its text."""
    return AuditDetails(
        model=request.model,
        use_case=request.use_case,
        prompt_sha256=prompt_digest(request),
        prompt_chars=request.prompt_chars(),
        message_count=len(request.messages),
        source=source,
    )


class IngestHandler:
    """Validates each request and forwards it, or refuses it with a structured error.

    Args:
        context: Audit and record builders.
        settings: Size limits and deadlines.
    """

    def __init__(self, context: StageContext, settings: IngestSettings) -> None:
        self._context = context
        self._settings = settings

    def handle(self, incoming: Incoming) -> Outcome:
        """RECEIVED → ACCEPTED (forward to the redactor) or RECEIVED → REJECTED."""
        context = self._context
        airlock_id = airlock_id_for(incoming)
        received_at = utcnow()
        try:
            request = parse_request(
                incoming.value,
                max_bytes=self._settings.max_message_bytes,
                max_prompt_chars=self._settings.max_prompt_chars,
            )
        except StageError as error:
            return self._refuse(incoming, airlock_id, error)

        details = request_details(request, incoming.source)
        received = context.transition(
            airlock_id, None, State.RECEIVED, request=request, details=details, at=received_at
        )
        if not context.topics.is_reply_topic(request.reply_to):
            refusal = StageError(
                ErrorCode.REPLY_TOPIC_NOT_ALLOWED,
                f"reply topic {request.reply_to!r} is not an allowed reply topic",
            )
            return context.fail(
                incoming,
                refusal,
                airlock_id=airlock_id,
                source=State.RECEIVED,
                target=State.REJECTED,
                request=request,
                details=details,
                preceding=[received],
            )
        envelope = Envelope(
            airlock_id=airlock_id,
            state=State.ACCEPTED,
            request=request,
            received_at=received_at,
            deadline=deadline_after(received_at, self._settings.request_deadline_s),
        )
        accepted = context.transition(airlock_id, State.RECEIVED, State.ACCEPTED, request=request, details=details)
        return Outcome(
            records=[context.forward(context.topics.accepted, envelope, incoming)],
            events=[received, accepted],
        )

    def _refuse(self, incoming: Incoming, airlock_id: str, error: StageError) -> Outcome:
        request_id, reply_to = _addressing_of(incoming)
        details = AuditDetails(source=incoming.source)
        received = self._context.transition(airlock_id, None, State.RECEIVED, request_id=request_id, details=details)
        return self._context.fail(
            incoming,
            error,
            airlock_id=airlock_id,
            source=State.RECEIVED,
            target=State.REJECTED,
            request_id=request_id,
            reply_to=reply_to,
            details=details,
            preceding=[received],
        )

    def give_up(self, incoming: Incoming, error: BaseException) -> Outcome:
        """Ingest's handler is pure; reaching here means a bug. Refuse, audited."""
        failure = StageError(ErrorCode.INTERNAL, "ingest could not process the request")
        return self._refuse(incoming, airlock_id_for(incoming), failure)


def _addressing_of(incoming: Incoming) -> tuple[str | None, str | None]:
    """Where to send a refusal: the body's ids if it is JSON enough, else the headers."""
    request_id, reply_to = None, None
    with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError):
        request_id, reply_to = addressing(json.loads(incoming.value))
    return (
        request_id or incoming.safe_header(h.REQUEST_ID),
        reply_to or incoming.safe_header(h.REPLY_TO),
    )
