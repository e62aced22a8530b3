"""Turning the bytes a caller published into a request, or into a precise refusal.

Pure functions: no Kafka. Every refusal is a :class:`~airlock.core.errors.StageError`
with a stable code and a message that never repeats the caller's content.
"""

from __future__ import annotations

from pydantic import ValidationError

from airlock.core.errors import ErrorCode, StageError
from airlock.core.jsondoc import NotJSON, parse_json
from airlock.core.models import LLMRequest


def describe_validation(error: ValidationError, limit: int = 5) -> str:
    """Summarise schema errors by field path and reason, never by value."""
    parts = []
    for item in error.errors()[:limit]:
        location = ".".join(str(part) for part in item["loc"]) or "(root)"
        parts.append(f"{location}: {item['msg']}")
    more = len(error.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "request does not match the schema: " + "; ".join(parts)


def parse_request(value: bytes, *, max_bytes: int, max_prompt_chars: int) -> LLMRequest:
    """Decode and validate a request record.

    Args:
        value: The record's bytes.
        max_bytes: Size limit of the record.
        max_prompt_chars: Size limit of the prompt (all messages).

    Raises:
        StageError: ``too_large``, ``malformed`` (not UTF-8, not JSON, nested deeper than
            200 levels, a lone surrogate escape) or ``schema_invalid``.
    """
    if len(value) > max_bytes:
        raise StageError(ErrorCode.TOO_LARGE, f"request is {len(value)} bytes; the limit is {max_bytes}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise StageError(ErrorCode.MALFORMED, "request is not valid UTF-8") from None
    try:
        document = parse_json(text)
    except NotJSON as error:
        # Not UTF-8, not JSON, nested too deep, a lone surrogate: the parser says which, where.
        raise StageError(ErrorCode.MALFORMED, f"request is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise StageError(ErrorCode.SCHEMA_INVALID, "request must be a JSON object")
    try:
        request = LLMRequest.model_validate(document)
    except ValidationError as error:
        raise StageError(ErrorCode.SCHEMA_INVALID, describe_validation(error)) from None
    chars = request.prompt_chars()
    if chars > max_prompt_chars:
        raise StageError(ErrorCode.TOO_LARGE, f"prompt is {chars} characters; the limit is {max_prompt_chars}")
    return request


def addressing(document: object) -> tuple[str | None, str | None]:
    """Best-effort ``(request_id, reply_to)`` from a document that failed validation."""
    if not isinstance(document, dict):
        return None, None
    request_id = document.get("request_id")
    reply_to = document.get("reply_to")
    return (
        request_id if isinstance(request_id, str) and len(request_id) <= 128 else None,
        reply_to if isinstance(reply_to, str) and len(reply_to) <= 249 else None,
    )
