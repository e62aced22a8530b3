"""Versioned message models shared by every stage.

The wire format is JSON (UTF-8). Every model carries ``schema_version`` so a consumer can
refuse, rather than misread, a message from a newer producer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from airlock.core.lifecycle import State

SCHEMA_VERSION: Literal[1] = 1

#: Identifiers end up in headers, keys and file names: keep them boring.
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@/-]+$")]


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_bytes(self) -> bytes:
        """Serialize to the JSON wire format."""
        return self.model_dump_json(exclude_none=True).encode()


class ChatMessage(_Model):
    """One message of a chat conversation, as the OpenAI chat API takes it."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str


class ChatParams(_Model):
    """The generation parameters a caller may set. Anything else is refused (``extra=forbid``)."""

    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    stop: list[str] | None = Field(default=None, max_length=4)


class LLMRequest(_Model):
    """What an internal system publishes to the request topic.

    Attributes:
        request_id: Chosen by the caller, unique per client; replies carry it back.
        client_id: The internal system that sends the request.
        tenant: The business unit the request is billed to.
        use_case: Selects policies (redaction, caching) within the tenant.
        model: The logical model name, resolved by the llm-worker's routing table.
        messages: The conversation; may contain personal data.
        params: Generation parameters from an allowlist.
        reply_to: The topic the answer (or a structured error) is published to.
        metadata: Free-form caller labels; never inspected, never logged.
        created_at: When the caller created the request.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: Identifier
    client_id: Identifier
    tenant: Identifier
    use_case: Identifier = "default"
    model: Identifier
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    params: ChatParams = ChatParams()
    reply_to: Identifier
    metadata: dict[str, str] = Field(default_factory=dict, max_length=32)
    created_at: datetime = Field(default_factory=utcnow)

    def prompt_chars(self) -> int:
        """Total characters over all messages."""
        return sum(len(message.content) for message in self.messages)


class Usage(_Model):
    """Token counts reported by the model."""

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


class SealedVault(_Model):
    """The placeholder→value map, encrypted with a key only the redactor holds.

    Attributes:
        key_id: Which redactor key sealed it (keys rotate).
        nonce: Base64 AES-GCM nonce.
        ciphertext: Base64 AES-GCM ciphertext and tag; the airlock id is the associated data.
    """

    key_id: str
    nonce: str
    ciphertext: str


class RedactionSummary(_Model):
    """What the redactor did, without the values it found."""

    policy_version: str
    entity_counts: dict[str, int] = Field(default_factory=dict)


#: Finish reasons of an answer the model ended on its own; anything else (``length``,
#: ``content_filter``…) means the answer was cut short or withheld.
COMPLETE_FINISH_REASONS = frozenset({"stop", "tool_calls", "function_call"})


def is_complete_finish(finish_reason: str) -> bool:
    """Whether ``finish_reason`` means the model finished its answer (not truncated or filtered)."""
    return finish_reason in COMPLETE_FINISH_REASONS


def _derive_complete(data: Any) -> Any:
    # ``complete`` always follows ``finish_reason``: a cut-short answer can never read as a success.
    if isinstance(data, dict) and "finish_reason" in data:
        return {**data, "complete": is_complete_finish(str(data["finish_reason"]))}
    return data


class Completion(_Model):
    """The model's answer, still in redacted form (placeholders, not values).

    Attributes:
        complete: False when ``finish_reason`` says the answer was cut short (``length``) or
            withheld (``content_filter``); derived from it, never set independently.
        target: The routing target that served the answer (``None`` for a cache hit).
        attempts: Calls made to providers for this answer (0 for a cache hit).
        cached: True when the answer came from the response cache.
    """

    content: str
    finish_reason: str
    model: str
    usage: Usage = Usage()
    latency_ms: float = 0.0
    complete: bool = True
    target: str | None = None
    attempts: int | None = None
    cached: bool = False

    _complete = model_validator(mode="before")(_derive_complete)


class Envelope(_Model):
    """The record that moves between stages after ingest.

    The request's messages are raw only on the accepted topic; from the redactor onwards
    they are redacted, and the map back to the raw values travels sealed in ``vault``.

    Attributes:
        airlock_id: Airlock's own id for this request: derived from the request record's
            position in the request topic, so reprocessing yields the same id.
        state: The state the producing stage moved the request to.
        request: The caller's request (messages redacted once ``state`` is REDACTED).
        received_at: When ingest received the request.
        deadline: After this instant the request fails instead of being worked on.
        vault: The sealed placeholder map (redacted states only).
        redaction: Counts of what the redactor masked, and under which policy.
        completion: The model's answer (completed state only).
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    airlock_id: str
    state: State
    request: LLMRequest
    received_at: datetime
    deadline: datetime
    vault: SealedVault | None = None
    redaction: RedactionSummary | None = None
    completion: Completion | None = None


class CompletionReply(_Model):
    """The answer the caller receives on its reply topic.

    Attributes:
        client_id: The client whose request this answers; the reply's stage signature covers
            it, so a client can tell its own replies from any other (see the SDK).
    """

    kind: Literal["completion"] = "completion"
    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: str
    airlock_id: str
    client_id: str | None = None
    model: str
    content: str
    finish_reason: str
    usage: Usage
    created_at: datetime = Field(default_factory=utcnow)
    #: False when the answer was cut short (``length``) or withheld (``content_filter``).
    complete: bool = True

    _complete = model_validator(mode="before")(_derive_complete)


class ErrorReply(_Model):
    """A structured error the caller receives instead of an answer.

    Attributes:
        code: Stable, machine-readable error code (see :mod:`airlock.core.errors`).
        message: A human sentence; never contains prompt text, PII or secrets.
        stage: The service that refused or failed the request.
        client_id: The (authenticated) client the error is for, as in :class:`CompletionReply`.
        retry_after: Seconds after which retrying may succeed (quota and rate errors).
        duplicate_of: For ``replayed`` and ``duplicate_request``: the airlock id of the
            original request, whose own reply went (or goes) to its reply topic.
    """

    kind: Literal["error"] = "error"
    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: str | None
    airlock_id: str
    code: str
    message: str
    stage: str
    client_id: str | None = None
    retry_after: float | None = None
    duplicate_of: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class UsageRecord(_Model):
    """One request's metered usage, published on the usage topic by the llm-worker.

    It is written in the same transaction as the completion, so spend is never lost and
    never counted twice; reports read it (``airlock usage``). Admission decides from the
    :class:`Settlement` written beside it on ingest's admission log.

    Attributes:
        model: The logical model the caller asked for.
        served_model: The provider model or deployment that answered.
        target: Which routing target served the call.
        cost_usd: Cost from the configured price table.
        cached: True when the answer came from the response cache (no tokens spent).
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    airlock_id: str
    request_id: str
    client_id: str
    tenant: str
    use_case: str
    model: str
    served_model: str
    target: str | None = None
    usage: Usage
    cost_usd: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    cached: bool = False
    at: datetime = Field(default_factory=utcnow)


class Settlement(_Model):
    """What one admitted request finally cost, for ingest's admission log.

    The llm-worker writes one with every completion and every failure, in the same
    transaction (so on the single partition of ``<prefix>ingest.admissions``, in the order
    every ingest replica reads). It settles the reservation ingest made when it admitted the
    request: the estimate is released and the actual spend counted. See
    :mod:`airlock.ingest.quota`.

    Attributes:
        airlock_id: The request settled.
        tenant: The tenant billed.
        client_id: The client that sent it.
        total_tokens: Input plus output tokens spent (0 for failures and cache hits).
        cost_usd: Cost from the llm-worker's price table.
        outcome: ``completed`` or ``failed``.
    """

    kind: Literal["settlement"] = "settlement"
    schema_version: Literal[1] = SCHEMA_VERSION
    airlock_id: str
    tenant: str
    client_id: str
    total_tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    outcome: Literal["completed", "failed"] = "completed"


Reply = Annotated[CompletionReply | ErrorReply, Field(discriminator="kind")]
reply_adapter: TypeAdapter[CompletionReply | ErrorReply] = TypeAdapter(Reply)

#: Scalar values allowed in audit details; nested text is deliberately not allowed.
AuditScalar = str | int | float | bool | None


class AuditDetails(_Model):
    """Facts about a transition that an auditor may see: never raw text, PII or secrets."""

    model: str | None = None
    use_case: str | None = None
    prompt_sha256: str | None = None
    prompt_chars: int | None = None
    message_count: int | None = None
    policy_version: str | None = None
    entity_counts: dict[str, int] | None = None
    usage: Usage | None = None
    finish_reason: str | None = None
    complete: bool | None = None
    target: str | None = None
    attempts: int | None = None
    cached: bool | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    source: str | None = None
    extra: dict[str, AuditScalar] | None = None


class AuditEvent(_Model):
    """One state transition of one request, as recorded on the audit topic.

    Attributes:
        event_id: Deterministic (airlock id + target state): a replayed stage emits the
            same id, so the auditor seals each transition once.
        airlock_id: Groups every event of one request.
        request_id: The caller's id, when the request could be read.
        stage: The service that made the transition.
        kind: ``transition`` for a lifecycle step; ``notice`` for anything else worth
            recording about a request (a poison record, an anomaly).
        from_state: The state before; ``None`` for the first event (and for notices).
        to_state: The state after (``None`` for notices).
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["transition", "notice"] = "transition"
    event_id: str
    airlock_id: str
    request_id: str | None = None
    client_id: str | None = None
    tenant: str | None = None
    stage: str
    from_state: State | None = None
    to_state: State | None = None
    at: datetime = Field(default_factory=utcnow)
    trace_id: str | None = None
    details: AuditDetails = AuditDetails()


def dump(model: BaseModel) -> dict[str, Any]:
    """JSON-compatible dict of ``model`` without ``None`` fields."""
    return model.model_dump(mode="json", exclude_none=True)
