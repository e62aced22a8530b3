"""The llm-worker's handler: redacted request in, completion (or audited failure) out."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import openai

from airlock.core.errors import ErrorCode, StageError
from airlock.core.lifecycle import State
from airlock.core.models import AuditDetails, Envelope, utcnow
from airlock.core.stage import Incoming, Outcome, Result, StageContext, read_envelope
from airlock.llm_worker.calls import CallFailure, call_model


class CompletionHandler:
    """REDACTED → COMPLETED | FAILED, with a batch's calls running concurrently.

    Args:
        context: Audit and record builders.
        client: The OpenAI client (any compatible endpoint).
        timeout_s: Timeout of one call attempt.
        max_concurrency: Calls in flight at once in this process.
    """

    def __init__(
        self,
        context: StageContext,
        client: openai.AsyncOpenAI,
        *,
        timeout_s: float,
        max_concurrency: int,
    ) -> None:
        self._context = context
        self._client = client
        self._timeout_s = timeout_s
        self._slots = asyncio.Semaphore(max_concurrency)

    async def process(self, batch: Sequence[Incoming]) -> Sequence[Result]:
        """Run the batch's model calls concurrently; results stay in offset order."""
        return await asyncio.gather(*(self._guarded(incoming) for incoming in batch), return_exceptions=True)

    async def _guarded(self, incoming: Incoming) -> Outcome:
        async with self._slots:
            return await self.handle(incoming)

    async def handle(self, incoming: Incoming) -> Outcome:
        """Call the model for one redacted request."""
        context = self._context
        try:
            envelope = read_envelope(incoming, State.REDACTED)
            if envelope.vault is None or envelope.redaction is None:
                # Never send a prompt that did not go through the redactor.
                raise StageError(ErrorCode.SCHEMA_INVALID, "redacted envelope without redaction record")
        except StageError as error:
            return context.poison(incoming, error)
        if utcnow() > envelope.deadline:
            return self._fail(
                incoming,
                envelope,
                StageError(ErrorCode.DEADLINE_EXCEEDED, "deadline passed before the model call"),
            )
        remaining = (envelope.deadline - utcnow()).total_seconds()
        try:
            completion = await call_model(self._client, envelope.request, min(self._timeout_s, remaining))
        except CallFailure as failure:
            return self._fail(incoming, envelope, failure.error)
        completed = envelope.model_copy(update={"state": State.COMPLETED, "completion": completion})
        event = context.transition(
            envelope.airlock_id,
            State.REDACTED,
            State.COMPLETED,
            request=envelope.request,
            details=AuditDetails(
                model=completion.model,
                usage=completion.usage,
                finish_reason=completion.finish_reason,
                latency_ms=round(completion.latency_ms, 3),
            ),
        )
        return Outcome(records=[context.forward(context.topics.completions, completed, incoming)], events=[event])

    def give_up(self, incoming: Incoming, error: BaseException) -> Outcome:
        """The handler kept raising (a bug, not the provider): fail the request, audited."""
        try:
            envelope = read_envelope(incoming, State.REDACTED)
        except StageError as unreadable:
            return self._context.poison(incoming, unreadable)
        return self._fail(
            incoming, envelope, StageError(ErrorCode.INTERNAL, "the llm-worker could not process the request")
        )

    def _fail(self, incoming: Incoming, envelope: Envelope, error: StageError) -> Outcome:
        return self._context.fail(
            incoming,
            error,
            airlock_id=envelope.airlock_id,
            source=State.REDACTED,
            target=State.FAILED,
            request=envelope.request,
            details=AuditDetails(model=envelope.request.model),
        )
