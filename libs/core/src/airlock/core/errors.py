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
    RESTORE_FAILED = "restore_failed"
    """The answer could not be restored for the caller."""
    INTERNAL = "internal"
    """A stage failed on this request in a way it could not recover from."""


class StageError(Exception):
    """A request-level failure that ends the request with a structured error.

    Args:
        code: The stable error code.
        message: A human sentence for the caller: no prompt text, PII or secrets.
        retry_after: Seconds after which a retry may succeed, when known.
    """

    def __init__(self, code: ErrorCode, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


class TransientError(Exception):
    """A failure worth retrying (the dependency may recover); the runtime retries it."""
