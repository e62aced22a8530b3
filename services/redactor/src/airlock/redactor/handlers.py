"""The redactor's two handlers: mask requests on the way out, restore answers on the way back.

Both run their work on one dedicated detector thread, shared, so the event loop (Kafka
heartbeats, commits) stays responsive while spaCy works and spaCy is never entered by two
threads at once. A micro-batch of requests is redacted with one pass of the NLP model; if
that pass fails, each request is retried alone so one bad text cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cryptography.exceptions import InvalidTag
from opentelemetry.trace import NoOpTracer, Tracer

from airlock.core.anomaly import AnomalySettings, injection_anomaly, output_anomalies
from airlock.core.crypto import KeyRing, KeyRingError, WatchedKeyRing, current_ring
from airlock.core.errors import ErrorCode, StageError
from airlock.core.lifecycle import State
from airlock.core.models import (
    AuditDetails,
    AuditScalar,
    ChatMessage,
    CompletionReply,
    Envelope,
    LLMRequest,
    RedactionSummary,
    utcnow,
)
from airlock.core.stage import Incoming, Outcome, Result, StageContext, read_envelope
from airlock.core.telemetry.tracing import GEN_AI_RESPONSE_MODEL
from airlock.redactor.observability import record_span, transition_of
from airlock.redactor.placeholders import PLACEHOLDER, restore
from airlock.redactor.policy import Policy
from airlock.redactor.redaction import OutputScan, RedactionResult, Redactor
from airlock.redactor.vault import open_map, seal_map, vault_binding

log = logging.getLogger(__name__)

T = TypeVar("T")


def detector_thread() -> ThreadPoolExecutor:
    """The one thread that runs detection in a redactor process."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="detector")


def policy_details(policy: Policy, *, extra: dict[str, AuditScalar] | None = None, **fields: Any) -> AuditDetails:
    """Audit details naming the policy (``name@version``) and the start of its digest."""
    return AuditDetails(
        policy_version=policy.label, extra={**(extra or {}), "policy_sha256": policy.digest[:16]}, **fields
    )


class RedactHandler:
    """ACCEPTED → REDACTED (or BLOCKED, or FAILED): mask the prompt, seal the map, forward.

    A detector failure is retried by the runtime and, after the last attempt, fails the
    request closed: the prompt is never forwarded.

    A record larger than ``large_request_bytes`` is analyzed a chunk per turn of the detector
    thread, so the batches of other partitions (small requests of other tenants) run between
    its chunks instead of waiting for all of it; and it fails closed
    (``pii_detection_failed``) once its own detection time passes ``detection_budget_s``.

    Args:
        context: The stage's builders.
        redactor: Applies the policies.
        ring: Seals placeholder maps (a watched file: the active key in force at each seal).
        max_prompt_chars: Larger prompts fail with ``too_large`` (never partly analyzed).
        executor: The detector thread.
        tracer: Records a ``redact`` span per request (no text in it).
        anomalies: Adds a prompt-injection notice to the outcome of a prompt with indicators.
        large_request_bytes: Records larger than this are analyzed a chunk per turn.
        detection_budget_s: Detection time a large request may take before it fails closed.
    """

    def __init__(
        self,
        context: StageContext,
        redactor: Redactor,
        ring: KeyRing | WatchedKeyRing,
        *,
        max_prompt_chars: int = 200_000,
        executor: ThreadPoolExecutor | None = None,
        tracer: Tracer | None = None,
        anomalies: AnomalySettings | None = None,
        large_request_bytes: int = 20_000,
        detection_budget_s: float = 60.0,
    ) -> None:
        self._context = context
        self._redactor = redactor
        self._ring = ring
        self._max_prompt_chars = max_prompt_chars
        self._executor = executor or detector_thread()
        self._tracer = tracer or NoOpTracer()
        self._anomalies = anomalies
        self._large_request_bytes = large_request_bytes
        self._detection_budget_s = detection_budget_s

    async def process(self, batch: Sequence[Incoming]) -> Sequence[Result]:
        """Redact a partition's micro-batch on the detector thread (large records a chunk per turn)."""
        loop = asyncio.get_running_loop()
        large = [index for index, incoming in enumerate(batch) if len(incoming.value) > self._large_request_bytes]
        if not large:
            return await loop.run_in_executor(self._executor, self.process_sync, list(batch))
        small = [incoming for index, incoming in enumerate(batch) if index not in large]
        results: list[Result] = list(await loop.run_in_executor(self._executor, self.process_sync, small))
        for index in large:  # offset order is the runtime's business: each result keeps its place
            results.insert(index, await self._redact_large(batch[index]))
        return results

    async def _redact_large(self, incoming: Incoming) -> Result:
        """One large request, a chunk per turn of the detector thread, within its budget."""
        loop = asyncio.get_running_loop()
        try:
            screened = await loop.run_in_executor(self._executor, self._screen, incoming)
        except Exception as error:  # a bug: let the runtime retry, then give up
            return error
        if isinstance(screened, Outcome):
            return screened
        envelope, policy = screened
        started = time.time_ns()
        steps = self._redactor.redact_in_steps(sent_texts(envelope.request), policy)
        spent_s = 0.0
        while True:
            try:
                step = await loop.run_in_executor(self._executor, _timed_step, steps)
            except Exception as error:  # detection failed: retried by the runtime, then closed
                return error
            spent_s += step.seconds
            if step.result is not None:
                break
            if spent_s > self._detection_budget_s:
                steps.close()
                over = StageError(
                    ErrorCode.PII_DETECTION_FAILED,
                    f"PII detection took more than its budget of {self._detection_budget_s:g}s; "
                    "the request was not sent to the model",
                )
                log.warning("request %s: detection over budget after %.1fs", envelope.airlock_id, spent_s)
                return self._fail(incoming, envelope, policy, over, State.FAILED)
        try:
            return self._observed(incoming, envelope, self._outcome(incoming, envelope, step.result), started)
        except Exception as error:
            return error

    def process_sync(self, batch: list[Incoming]) -> list[Result]:
        """Redact a micro-batch: one NLP pass over every prompt, one result per record."""
        results: list[Result | None] = [None] * len(batch)
        pending: list[tuple[int, Incoming, Envelope, Policy]] = []
        for index, incoming in enumerate(batch):
            try:
                early = self._screen(incoming)
            except Exception as error:  # a bug: let the runtime retry, then give up
                results[index] = error
                continue
            if isinstance(early, Outcome):
                results[index] = early
            else:
                envelope, policy = early
                pending.append((index, incoming, envelope, policy))
        if pending:
            started = time.time_ns()
            requests = [(sent_texts(envelope.request), policy) for _, _, envelope, policy in pending]
            try:
                redactions: list[RedactionResult | BaseException] = list(self._redactor.redact_many(requests))
            except Exception as error:
                log.warning("batch detection failed (%s); retrying %d requests one by one", error, len(pending))
                redactions = [_attempt(functools.partial(self._redact_one, request)) for request in requests]
            for (index, incoming, envelope, _), redaction in zip(pending, redactions, strict=True):
                if isinstance(redaction, BaseException):
                    results[index] = redaction
                    continue
                try:
                    results[index] = self._observed(
                        incoming, envelope, self._outcome(incoming, envelope, redaction), started
                    )
                except Exception as error:
                    results[index] = error
        return [result if result is not None else RuntimeError("no result") for result in results]

    def _observed(self, incoming: Incoming, envelope: Envelope, outcome: Outcome, started_ns: int) -> Outcome:
        """Add the prompt-injection notice, if any, and record the ``redact`` span."""
        transition = transition_of(outcome)
        if transition is not None and self._anomalies is not None and self._anomalies.prompt_injection:
            anomaly = injection_anomaly(envelope.request.messages, transition)
            if anomaly is not None:
                outcome.events.append(anomaly.notice(self._context))
        record_span(self._tracer, incoming, "redact", outcome, started_ns, envelope.request.model)
        return outcome

    def _redact_one(self, request: tuple[list[str], Policy]) -> RedactionResult:
        return self._redactor.redact_many([request])[0]

    def handle(self, incoming: Incoming) -> Outcome:
        """Redact one accepted request (raises to ask for a retry)."""
        result = self.process_sync([incoming])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def _screen(self, incoming: Incoming) -> Outcome | tuple[Envelope, Policy]:
        """Decode, select the policy and refuse what must not be analyzed at all."""
        try:
            envelope = read_envelope(incoming, State.ACCEPTED)
        except StageError as error:
            return self._context.poison(incoming, error)
        request = envelope.request
        policy = self._redactor.policy_for(request.tenant, request.use_case)
        if utcnow() > envelope.deadline:
            late = StageError(ErrorCode.DEADLINE_EXCEEDED, "deadline passed before redaction")
            return self._fail(incoming, envelope, policy, late, State.FAILED)
        chars = request.prompt_chars()
        if chars > self._max_prompt_chars:
            too_large = StageError(
                ErrorCode.TOO_LARGE,
                f"prompt is {chars} characters; the redactor analyzes at most {self._max_prompt_chars}",
            )
            return self._fail(incoming, envelope, policy, too_large, State.FAILED)
        return envelope, policy

    def _outcome(self, incoming: Incoming, envelope: Envelope, result: RedactionResult) -> Outcome:
        context, request, policy = self._context, envelope.request, result.policy
        if result.blocked:
            error = StageError(
                ErrorCode.POLICY_BLOCKED,
                f"policy {policy.label} does not allow sending {', '.join(result.blocked)}; "
                "remove it from the prompt or ask for another use case",
            )
            return self._fail(incoming, envelope, policy, error, State.BLOCKED, entity_counts=result.blocked_counts())
        masked = with_texts(request, result.texts)
        counts = result.entity_counts()
        redacted = envelope.model_copy(
            update={
                "state": State.REDACTED,
                "request": masked,
                "vault": seal_map(current_ring(self._ring), vault_binding(envelope), result.mapping.by_placeholder),
                "redaction": RedactionSummary(policy_version=policy.label, entity_counts=counts),
            }
        )
        event = context.transition(
            envelope.airlock_id,
            State.ACCEPTED,
            State.REDACTED,
            request=request,
            details=policy_details(
                policy,
                model=request.model,
                use_case=request.use_case,
                entity_counts=counts,
                extra={"placeholders": len(result.mapping.sent)},
            ),
        )
        return Outcome(records=[context.forward(context.topics.redacted, redacted, incoming)], events=[event])

    def give_up(self, incoming: Incoming, error: BaseException) -> Outcome:
        """Detection kept failing: fail the request closed, audited."""
        try:
            envelope = read_envelope(incoming, State.ACCEPTED)
        except StageError as unreadable:
            return self._context.poison(incoming, unreadable)
        policy = self._redactor.policy_for(envelope.request.tenant, envelope.request.use_case)
        failure = StageError(
            ErrorCode.PII_DETECTION_FAILED,
            "PII detection failed; the request was not sent to the model",
        )
        return self._fail(incoming, envelope, policy, failure, State.FAILED)

    def _fail(
        self,
        incoming: Incoming,
        envelope: Envelope,
        policy: Policy,
        error: StageError,
        target: State,
        entity_counts: dict[str, int] | None = None,
    ) -> Outcome:
        return self._context.fail(
            incoming,
            error,
            airlock_id=envelope.airlock_id,
            source=State.ACCEPTED,
            target=target,
            request=envelope.request,
            details=policy_details(policy, use_case=envelope.request.use_case, entity_counts=entity_counts),
        )


def in_scope(mapping: dict[str, str], envelope: Envelope, policy: Policy) -> dict[str, str]:
    """The part of ``mapping`` the answer may restore: placeholders in the policy's roles' messages.

    The envelope's messages are the masked ones the model saw (signed along the way), so
    which placeholder came from whose message is read from them.
    """
    roles = set(policy.restore_roles)
    seen = {
        match.group(0)
        for message in envelope.request.messages
        if message.role in roles
        for match in PLACEHOLDER.finditer(message.content)
    }
    return {placeholder: value for placeholder, value in mapping.items() if placeholder in seen or placeholder == value}


def sent_texts(request: LLMRequest) -> list[str]:
    """Every text of a request that leaves Airlock or rides on its topics, in a fixed order.

    The messages, the stop sequences (the model sees them) and the metadata values (they
    travel with the envelope): all masked with one placeholder map.
    """
    stop = request.params.stop or []
    return [m.content for m in request.messages] + list(stop) + [request.metadata[k] for k in sorted(request.metadata)]


def with_texts(request: LLMRequest, texts: Sequence[str]) -> LLMRequest:
    """``request`` with the texts of :func:`sent_texts` replaced by ``texts`` (same order)."""
    count, stop = len(request.messages), request.params.stop
    messages = [
        ChatMessage(role=message.role, content=text)
        for message, text in zip(request.messages, texts[:count], strict=True)
    ]
    rest = list(texts[count:])
    params = request.params
    if stop:
        params = params.model_copy(update={"stop": rest[: len(stop)]})
        rest = rest[len(stop) :]
    metadata = dict(zip(sorted(request.metadata), rest, strict=True))
    return request.model_copy(update={"messages": messages, "params": params, "metadata": metadata})


@dataclass(frozen=True)
class _Step(Generic[T]):
    seconds: float
    result: T | None


def _timed_step(steps: Generator[int, None, T]) -> _Step[T]:
    """Run one step on the detector thread (a generator's end cannot cross into a future)."""
    started = time.perf_counter()
    try:
        next(steps)
    except StopIteration as done:
        return _Step(time.perf_counter() - started, done.value)
    return _Step(time.perf_counter() - started, None)


def _attempt(work: Callable[[], T]) -> T | BaseException:
    try:
        return work()
    except Exception as error:
        return error


class RestoreHandler:
    """COMPLETED → DELIVERED: open the map, restore the answer, scan it, reply to the caller.

    Args:
        context: The stage's builders.
        redactor: Selects the request's policy and scans the answer for introduced PII.
        ring: Opens placeholder maps (a watched file: the keys in force at each open).
        executor: The detector thread (shared with :class:`RedactHandler`).
        tracer: Records a ``restore`` span per answer (no text in it).
        anomalies: Adds notices for answers with altered placeholders or introduced PII.
        large_answer_bytes: Records larger than this have their answer scanned a chunk per
            turn of the detector thread, as :class:`RedactHandler` does with large requests.
    """

    def __init__(
        self,
        context: StageContext,
        ring: KeyRing | WatchedKeyRing,
        redactor: Redactor,
        *,
        executor: ThreadPoolExecutor | None = None,
        tracer: Tracer | None = None,
        anomalies: AnomalySettings | None = None,
        large_answer_bytes: int = 20_000,
    ) -> None:
        self._context = context
        self._ring = ring
        self._redactor = redactor
        self._executor = executor or detector_thread()
        self._tracer = tracer or NoOpTracer()
        self._anomalies = anomalies
        self._large_answer_bytes = large_answer_bytes

    async def process(self, batch: Sequence[Incoming]) -> Sequence[Result]:
        """Restore a partition's micro-batch on the detector thread (large answers a chunk per turn)."""
        loop = asyncio.get_running_loop()
        large = [index for index, incoming in enumerate(batch) if len(incoming.value) > self._large_answer_bytes]
        small = [incoming for index, incoming in enumerate(batch) if index not in large]
        results: list[Result] = list(await loop.run_in_executor(self._executor, self.process_sync, small))
        for index in large:  # each result keeps its place; the runtime commits in offset order
            results.insert(index, await self._restore_large(batch[index]))
        return results

    async def _restore_large(self, incoming: Incoming) -> Result:
        """One large answer: restored, then scanned a chunk per turn, then delivered."""
        loop = asyncio.get_running_loop()
        restored = await loop.run_in_executor(
            self._executor, _attempt, functools.partial(self._restored_answer, incoming)
        )
        scan: OutputScan | None = None
        if isinstance(restored, tuple):  # else handle() ends it as it would any record
            steps = self._redactor.scan_output_in_steps(*restored)
            while True:
                try:
                    step = await loop.run_in_executor(self._executor, _timed_step, steps)
                except Exception as error:  # the runtime retries, then gives up
                    return error
                if step.result is not None:
                    scan = step.result
                    break
        return await loop.run_in_executor(self._executor, _attempt, functools.partial(self.handle, incoming, scan))

    def process_sync(self, batch: list[Incoming]) -> list[Result]:
        """Restore each record; an exception stands in for a record's outcome (retry).

        The batch's output scans run first, as one pass of the NLP model over every answer
        (scanning answers one at a time cost several times more CPU per answer: the answer
        direction drained ~6× slower than the request direction). If that pass fails, each
        record scans its own answer, so one bad text cannot fail its neighbours.
        """
        scans = self._scan_batch(batch)
        return [_attempt(functools.partial(self.handle, incoming, scans.get(i))) for i, incoming in enumerate(batch)]

    def _scan_batch(self, batch: list[Incoming]) -> dict[int, OutputScan]:
        """Output scans of the batch's restorable answers by position (empty when it fails)."""
        if len(batch) < 2:
            return {}
        answers: dict[int, tuple[str, Policy, dict[str, str]]] = {}
        for index, incoming in enumerate(batch):
            restored = _attempt(functools.partial(self._restored_answer, incoming))
            if isinstance(restored, tuple):
                answers[index] = restored
        if not answers:
            return {}
        scans = _attempt(functools.partial(self._redactor.scan_outputs, list(answers.values())))
        if isinstance(scans, BaseException):
            log.warning("batched output scan failed (%s); scanning each answer alone", type(scans).__name__)
            return {}
        return dict(zip(answers, scans, strict=True))

    def _restored_answer(self, incoming: Incoming) -> tuple[str, Policy, dict[str, str]] | None:
        """The restored answer, its policy and map, as :meth:`_restore` computes them (``None``: not restorable)."""
        envelope = read_envelope(incoming, State.COMPLETED)
        if envelope.completion is None or envelope.vault is None:
            return None
        policy = self._redactor.policy_for(envelope.request.tenant, envelope.request.use_case)
        mapping = open_map(current_ring(self._ring), vault_binding(envelope), envelope.vault)
        return restore(envelope.completion.content, in_scope(mapping, envelope, policy)).text, policy, mapping

    def handle(self, incoming: Incoming, scan: OutputScan | None = None) -> Outcome:
        """Restore one completion and deliver it (with its span and any anomaly notices).

        Args:
            incoming: The completion record.
            scan: Its answer's output scan when the batch already ran it.
        """
        started = time.time_ns()
        outcome = self._restore(incoming, scan)
        transition = transition_of(outcome)
        watching = self._anomalies is not None and self._anomalies.output
        if watching and transition is not None and transition.to_state is State.DELIVERED:
            for anomaly in output_anomalies(transition.details.extra or {}, transition):
                outcome.events.append(anomaly.notice(self._context))
        model = transition.details.model if transition is not None else None
        record_span(self._tracer, incoming, "restore", outcome, started, model, model_key=GEN_AI_RESPONSE_MODEL)
        return outcome

    def _restore(self, incoming: Incoming, scan: OutputScan | None = None) -> Outcome:
        context = self._context
        try:
            envelope = read_envelope(incoming, State.COMPLETED)
            if envelope.completion is None or envelope.vault is None:
                raise StageError(ErrorCode.SCHEMA_INVALID, "completed envelope lacks completion or vault")
        except StageError as error:
            return context.poison(incoming, error)
        request, completion = envelope.request, envelope.completion
        if not context.topics.is_reply_topic(request.reply_to):
            # A restored answer is the caller's PII in clear: it goes to a reply topic or nowhere
            # (never the ledger, the audit topic or a foreign system's topic).
            refused = StageError(ErrorCode.REPLY_TOPIC_NOT_ALLOWED, "restored answers go only to reply topics")
            return context.poison(incoming, refused)
        policy = self._redactor.policy_for(request.tenant, request.use_case)
        try:
            mapping = open_map(current_ring(self._ring), vault_binding(envelope), envelope.vault)
        except (InvalidTag, KeyRingError, ValueError):
            failure = StageError(ErrorCode.RESTORE_FAILED, "the answer could not be restored")
            return self._fail(incoming, envelope, policy, failure)
        scoped = in_scope(mapping, envelope, policy)
        restoration = restore(completion.content, scoped, withheld=mapping.keys() - scoped.keys())
        if scan is None:
            scan = self._redactor.scan_output(restoration.text, policy, mapping)
        reply = CompletionReply(
            request_id=request.request_id,
            airlock_id=envelope.airlock_id,
            client_id=request.client_id,
            model=completion.model,
            content=scan.text,
            finish_reason=completion.finish_reason,
            usage=completion.usage,
        )
        survival = restoration.survival_rate
        extra: dict[str, AuditScalar] = {
            "placeholders_sent": restoration.sent,
            "placeholders_restored": restoration.restored,
            "placeholders_survived": restoration.survived,
            "placeholders_missing": restoration.missing,
            "placeholders_altered": restoration.altered,
            "placeholders_unknown": restoration.unknown,
            "placeholders_out_of_scope": restoration.withheld,
            "placeholder_survival_rate": None if survival is None else round(survival, 4),
            "output_pii_found": scan.found,
            "output_pii_action": scan.action if scan.found else None,
        }
        for entity, count in scan.entity_counts.items():
            extra[f"output_pii.{entity}"] = count
        event = context.transition(
            envelope.airlock_id,
            State.COMPLETED,
            State.DELIVERED,
            request=request,
            details=policy_details(policy, model=completion.model, finish_reason=completion.finish_reason, extra=extra),
        )
        return Outcome(records=[context.reply(request.reply_to, reply, incoming)], events=[event])

    def give_up(self, incoming: Incoming, error: BaseException) -> Outcome:
        """Restoration kept failing (a bug): fail the request, audited."""
        try:
            envelope = read_envelope(incoming, State.COMPLETED)
        except StageError as unreadable:
            return self._context.poison(incoming, unreadable)
        policy = self._redactor.policy_for(envelope.request.tenant, envelope.request.use_case)
        failure = StageError(ErrorCode.RESTORE_FAILED, "the answer could not be restored")
        return self._fail(incoming, envelope, policy, failure)

    def _fail(self, incoming: Incoming, envelope: Envelope, policy: Policy, error: StageError) -> Outcome:
        return self._context.fail(
            incoming,
            error,
            airlock_id=envelope.airlock_id,
            source=State.COMPLETED,
            target=State.FAILED,
            request=envelope.request,
            details=policy_details(policy),
        )
