"""The redactor's two handlers: mask requests on the way out, restore answers on the way back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from cryptography.exceptions import InvalidTag

from airlock.core.crypto import KeyRing, KeyRingError
from airlock.core.errors import ErrorCode, StageError
from airlock.core.lifecycle import State
from airlock.core.models import (
    AuditDetails,
    ChatMessage,
    CompletionReply,
    Envelope,
    RedactionSummary,
    utcnow,
)
from airlock.core.stage import Incoming, Outcome, Result, StageContext, read_envelope
from airlock.redactor.placeholders import restore
from airlock.redactor.redaction import Redactor
from airlock.redactor.vault import open_map, seal_map


class RedactHandler:
    """ACCEPTED → REDACTED: mask the prompt, seal the map, forward to the llm-worker.

    Detection runs on a dedicated thread so the event loop (Kafka heartbeats, commits)
    stays responsive while spaCy works. A detector failure is retried by the runtime and,
    after the last attempt, fails the request closed: the prompt is never forwarded.
    """

    def __init__(self, context: StageContext, redactor: Redactor, ring: KeyRing, policy_version: str) -> None:
        self._context = context
        self._redactor = redactor
        self._ring = ring
        self._policy_version = policy_version
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="redact")

    async def process(self, batch: Sequence[Incoming]) -> Sequence[Result]:
        """Redact each record of a batch on the detector thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._process_sync, list(batch))

    def _process_sync(self, batch: list[Incoming]) -> list[Result]:
        results: list[Result] = []
        for incoming in batch:
            try:
                results.append(self.handle(incoming))
            except Exception as error:
                results.append(error)
        return results

    def handle(self, incoming: Incoming) -> Outcome:
        """Redact one accepted request."""
        context = self._context
        try:
            envelope = read_envelope(incoming, State.ACCEPTED)
        except StageError as error:
            return context.poison(incoming, error)
        request = envelope.request
        if utcnow() > envelope.deadline:
            return self._fail(
                incoming,
                envelope,
                StageError(ErrorCode.DEADLINE_EXCEEDED, "deadline passed before redaction"),
            )
        result = self._redactor.redact([message.content for message in request.messages])
        messages = [
            ChatMessage(role=message.role, content=text)
            for message, text in zip(request.messages, result.texts, strict=True)
        ]
        summary = RedactionSummary(policy_version=self._policy_version, entity_counts=result.entity_counts())
        redacted = envelope.model_copy(
            update={
                "state": State.REDACTED,
                "request": request.model_copy(update={"messages": messages}),
                "vault": seal_map(self._ring, envelope.airlock_id, result.mapping.by_placeholder),
                "redaction": summary,
            }
        )
        event = context.transition(
            envelope.airlock_id,
            State.ACCEPTED,
            State.REDACTED,
            request=request,
            details=AuditDetails(
                model=request.model,
                policy_version=self._policy_version,
                entity_counts=summary.entity_counts,
            ),
        )
        return Outcome(records=[context.forward(context.topics.redacted, redacted, incoming)], events=[event])

    def give_up(self, incoming: Incoming, error: BaseException) -> Outcome:
        """Detection kept failing: fail the request closed, audited."""
        try:
            envelope = read_envelope(incoming, State.ACCEPTED)
        except StageError as unreadable:
            return self._context.poison(incoming, unreadable)
        failure = StageError(
            ErrorCode.PII_DETECTION_FAILED,
            "PII detection failed; the request was not sent to the model",
        )
        return self._fail(incoming, envelope, failure)

    def _fail(self, incoming: Incoming, envelope: Envelope, error: StageError) -> Outcome:
        return self._context.fail(
            incoming,
            error,
            airlock_id=envelope.airlock_id,
            source=State.ACCEPTED,
            target=State.FAILED,
            request=envelope.request,
            details=AuditDetails(policy_version=self._policy_version),
        )


class RestoreHandler:
    """COMPLETED → DELIVERED: open the map, restore the answer, reply to the caller."""

    def __init__(self, context: StageContext, ring: KeyRing) -> None:
        self._context = context
        self._ring = ring

    def handle(self, incoming: Incoming) -> Outcome:
        """Restore one completion and deliver it."""
        context = self._context
        try:
            envelope = read_envelope(incoming, State.COMPLETED)
            if envelope.completion is None or envelope.vault is None:
                raise StageError(ErrorCode.SCHEMA_INVALID, "completed envelope lacks completion or vault")
        except StageError as error:
            return context.poison(incoming, error)
        request, completion = envelope.request, envelope.completion
        try:
            mapping = open_map(self._ring, envelope.airlock_id, envelope.vault)
        except (InvalidTag, KeyRingError, ValueError):
            failure = StageError(ErrorCode.RESTORE_FAILED, "the answer could not be restored")
            return self._fail(incoming, envelope, failure)
        restoration = restore(completion.content, mapping)
        reply = CompletionReply(
            request_id=request.request_id,
            airlock_id=envelope.airlock_id,
            model=completion.model,
            content=restoration.text,
            finish_reason=completion.finish_reason,
            usage=completion.usage,
        )
        event = context.transition(
            envelope.airlock_id,
            State.COMPLETED,
            State.DELIVERED,
            request=request,
            details=AuditDetails(
                model=completion.model,
                finish_reason=completion.finish_reason,
                extra={
                    "placeholders_sent": len(mapping),
                    "placeholders_restored": restoration.restored,
                    "placeholders_unknown": restoration.unknown,
                    "placeholders_missing": restoration.missing,
                },
            ),
        )
        return Outcome(records=[context.reply(request.reply_to, reply, incoming)], events=[event])

    def give_up(self, incoming: Incoming, error: BaseException) -> Outcome:
        """Restoration kept failing (a bug): fail the request, audited."""
        try:
            envelope = read_envelope(incoming, State.COMPLETED)
        except StageError as unreadable:
            return self._context.poison(incoming, unreadable)
        return self._fail(incoming, envelope, StageError(ErrorCode.RESTORE_FAILED, "the answer could not be restored"))

    def _fail(self, incoming: Incoming, envelope: Envelope, error: StageError) -> Outcome:
        return self._context.fail(
            incoming,
            error,
            airlock_id=envelope.airlock_id,
            source=State.COMPLETED,
            target=State.FAILED,
            request=envelope.request,
        )
