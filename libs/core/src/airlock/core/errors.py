"""Stable error codes and the exceptions that carry them.

Codes are part of the contract with callers and auditors: add new ones, never rename.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Machine-readable reasons a request did not get an answer."""

    MALFORMED = "malformed"
    """The record is not UTF-8 JSON."""
    SCHEMA_INVALID = "schema_invalid"
    """The JSON does not match the request schema."""
    TOO_LARGE = "too_large"
    """The record or the prompt is over the configured size limit."""
    BAD_HEADER = "bad_header"
    """A header Airlock reads is not valid UTF-8 or is malformed."""
    REPLY_TOPIC_NOT_ALLOWED = "reply_topic_not_allowed"
    """The caller named a reply topic it may not use."""
    DEADLINE_EXCEEDED = "deadline_exceeded"
    """The request's deadline passed before it could be answered."""
    PII_DETECTION_FAILED = "pii_detection_failed"
    """The PII detector failed repeatedly; the prompt was not sent (fail closed)."""
    POLICY_BLOCKED = "policy_blocked"
    """The redaction policy forbids sending this content."""
    MODEL_REJECTED = "model_rejected"
    """The model provider refused the request (a non-retryable 4xx)."""
    MODEL_UNAVAILABLE = "model_unavailable"
    """Every attempt to reach the model failed."""
    MODEL_NOT_ALLOWED = "model_not_allowed"
    """The logical model is not in the llm-worker's routing table (not an approved model)."""
    RESTORE_FAILED = "restore_failed"
    """The answer could not be restored for the caller."""
    INTERNAL = "internal"
    """A stage failed on this request in a way it could not recover from."""
    SIGNATURE_MISSING = "signature_missing"
    """The request lacks a signing header (client id, key id, timestamp, signature, request id)."""
    SIGNATURE_INVALID = "signature_invalid"
    """The signature does not match the record (wrong key, or the record was altered)."""
    UNKNOWN_CLIENT = "unknown_client"
    """The signing client is not in the clients file."""
    UNKNOWN_KEY = "unknown_key"
    """The key id is not one of the client's keys."""
    KEY_EXPIRED = "key_expired"
    """The key was rotated out: its ``not_after`` has passed."""
    TIMESTAMP_OUT_OF_WINDOW = "timestamp_out_of_window"
    """The signing timestamp is too old or too far in the future."""
    REPLAYED = "replayed"
    """This exact signed record was already received (a replay)."""
    DUPLICATE_REQUEST = "duplicate_request"
    """The client already sent a request with this id; it was not run again."""
    IDENTITY_MISMATCH = "identity_mismatch"
    """The body's client id or request id differs from the signed headers."""
    UNKNOWN_TENANT = "unknown_tenant"
    """The tenant is not declared in the clients file."""
    TENANT_NOT_ALLOWED = "tenant_not_allowed"
    """The client may not bill this tenant."""
    USE_CASE_NOT_ALLOWED = "use_case_not_allowed"
    """The client may not use this use case."""
    PARAM_NOT_ALLOWED = "param_not_allowed"
    """A generation parameter is outside what the client may ask for (e.g. ``max_tokens``)."""
    RATE_LIMITED = "rate_limited"
    """The tenant's or client's requests-per-minute limit is reached; see ``retry_after``."""
    TOKEN_QUOTA_EXCEEDED = "token_quota_exceeded"  # noqa: S105 (an error code, not a secret)
    """The tenant's or client's tokens-per-day quota is used up; see ``retry_after``."""
    BUDGET_EXCEEDED = "budget_exceeded"
    """The tenant's or client's cost budget for the month is spent; see ``retry_after``."""
    UNAUTHENTIC_RECORD = "unauthentic_record"
    """An internal record no stage that writes its topic signed (forged, altered or moved)."""


class StageError(Exception):
    """A request-level failure that ends the request with a structured error.

    Args:
        code: The stable error code.
        message: A human sentence for the caller: no prompt text, PII or secrets.
        retry_after: Seconds after which a retry may succeed, when known.
        duplicate_of: The airlock id of the original request (replays and duplicates).
    """

    def __init__(
        self, code: ErrorCode, message: str, retry_after: float | None = None, duplicate_of: str | None = None
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.duplicate_of = duplicate_of


class TransientError(Exception):
    """A failure worth retrying (the dependency may recover); the runtime retries it."""
