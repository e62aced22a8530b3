"""The signing scheme against the published test vectors (docs/signing.md)."""

import base64
import hashlib
import json
from pathlib import Path

import pytest

from airlock.core import headers as h
from airlock.core.signing import (
    decode_secret,
    generate_secret,
    request_partition,
    sign,
    signature_matches,
    signing_headers,
    string_to_sign,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
VECTORS = json.loads((DOCS / "signing-vectors.json").read_text(encoding="utf-8"))


def fields(vector: dict) -> dict:
    return {
        "client_id": vector["client_id"],
        "key_id": vector["key_id"],
        "timestamp": vector["timestamp"],
        "request_id": vector["request_id"],
        "body": base64.b64decode(vector["body_base64"]),
    }


def test_there_are_vectors_for_text_unicode_and_binary_bodies() -> None:
    assert {v["name"] for v in VECTORS} >= {"basic", "utf8-body", "binary-body"}


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_vector_matches_implementation(vector: dict) -> None:
    secret = decode_secret(vector["secret_base64"])
    body = base64.b64decode(vector["body_base64"])
    if "body_utf8" in vector:
        assert vector["body_utf8"].encode("utf-8") == body

    assert hashlib.sha256(string_to_sign(**fields(vector))).hexdigest() == vector["string_to_sign_sha256"]
    assert sign(secret, **fields(vector)) == vector["signature"]
    assert signature_matches(secret, vector["signature"], **fields(vector))
    assert request_partition(vector["client_id"], vector["request_id"], 6) == vector["partition_of_6"]


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_vector_is_published_in_the_spec(vector: dict) -> None:
    spec = (DOCS / "signing.md").read_text(encoding="utf-8")
    row = next(line for line in spec.splitlines() if line.startswith(f"| {vector['name']} |"))
    assert vector["signature"] in row
    assert vector["secret_base64"] in row
    assert f"| {vector['timestamp']} |" in row
    assert row.rstrip().endswith(f"| {vector['partition_of_6']} |")


def test_string_to_sign_layout() -> None:
    assert string_to_sign(client_id="c", key_id="k", timestamp=7, request_id="r", body=b"{}") == (
        b"AIRLOCK-HMAC-SHA256-V1\nc\nk\n7\nr\n{}"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"body": b'{"request_id":"r-0001"} '},
        {"timestamp": 1735689601},
        {"request_id": "r-0002"},
        {"key_id": "other"},
        {"client_id": "billing2"},
    ],
)
def test_any_change_breaks_the_signature(change: dict) -> None:
    vector = VECTORS[0]
    secret = decode_secret(vector["secret_base64"])
    assert not signature_matches(secret, vector["signature"], **{**fields(vector), **change})


def test_other_secret_does_not_verify() -> None:
    vector = VECTORS[0]
    assert not signature_matches(decode_secret(generate_secret()), vector["signature"], **fields(vector))


@pytest.mark.parametrize("bad", ["a\nb", "", "x" * 129, "ümlaut", "a b"])
def test_fields_that_could_shift_boundaries_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="request_id"):
        string_to_sign(client_id="c", key_id="k", timestamp=1, request_id=bad, body=b"")


def test_signing_headers_carry_every_input() -> None:
    secret = decode_secret(generate_secret())
    headers = dict(signing_headers(secret, client_id="c", key_id="k", timestamp=5, request_id="r", body=b"x"))
    assert headers[h.CLIENT_ID] == b"c" and headers[h.KEY_ID] == b"k"
    assert headers[h.TIMESTAMP] == b"5" and headers[h.REQUEST_ID] == b"r"
    assert headers[h.SIGNATURE].decode() == sign(
        secret, client_id="c", key_id="k", timestamp=5, request_id="r", body=b"x"
    )


def test_secret_must_be_32_bytes_of_base64_and_errors_do_not_echo_it() -> None:
    short = base64.b64encode(b"short-secret-value").decode()
    with pytest.raises(ValueError, match="32 bytes") as caught:
        decode_secret(short)
    assert short not in str(caught.value)
    with pytest.raises(ValueError, match="base64"):
        decode_secret("not base64 !!")


def test_partitions_spread_and_stay_in_range() -> None:
    seen = {request_partition("billing", f"r-{i}", 6) for i in range(200)}
    assert seen == set(range(6))
    with pytest.raises(ValueError, match="at least 1"):
        request_partition("c", "r", 0)
