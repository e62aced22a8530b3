import json

import pytest

from airlock.core.errors import ErrorCode, StageError
from airlock.ingest.validation import parse_request

VALID = {
    "request_id": "r-1",
    "client_id": "billing",
    "tenant": "acme",
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hello"}],
    "reply_to": "airlock.responses",
}


def parse(document: object, **limits: int) -> object:
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    return parse_request(raw, max_bytes=limits.get("max_bytes", 10_000), max_prompt_chars=limits.get("chars", 100))


def code_of(document: object, **limits: int) -> ErrorCode:
    with pytest.raises(StageError) as caught:
        parse(document, **limits)
    return caught.value.code


def test_valid_request_parses() -> None:
    request = parse(VALID)
    assert request.request_id == "r-1" and request.use_case == "default"


@pytest.mark.parametrize(
    ("document", "code"),
    [
        (b"\xff\xfe", ErrorCode.MALFORMED),
        (b"{not json", ErrorCode.MALFORMED),
        ([1, 2], ErrorCode.SCHEMA_INVALID),
        ({**VALID, "messages": []}, ErrorCode.SCHEMA_INVALID),
        ({**VALID, "params": {"logit_bias": {"1": 5}}}, ErrorCode.SCHEMA_INVALID),
        ({**VALID, "surprise": 1}, ErrorCode.SCHEMA_INVALID),
        ({**VALID, "schema_version": 2}, ErrorCode.SCHEMA_INVALID),
        ({**VALID, "messages": [{"role": "user", "content": "x" * 101}]}, ErrorCode.TOO_LARGE),
    ],
)
def test_bad_input_gets_a_precise_code(document: object, code: ErrorCode) -> None:
    assert code_of(document) == code


def test_oversized_record_is_refused_before_parsing() -> None:
    assert code_of(VALID, max_bytes=20) == ErrorCode.TOO_LARGE


def test_schema_messages_name_fields_not_values() -> None:
    with pytest.raises(StageError) as caught:
        parse({**VALID, "tenant": "secret value with spaces"})
    assert "tenant" in caught.value.message
    assert "secret value" not in caught.value.message
