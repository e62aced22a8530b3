"""The request/reply contract for internal systems in any language, as an AsyncAPI document.

``faststream docs gen airlock.ingest.app:app`` renders it from the models in
:mod:`airlock.core.models` (committed as ``docs/asyncapi.json``; a test keeps it current).
The stage runtime consumes raw records in batches, so its own subscriber says nothing about
the payload; this documentation-only broker (never connected) declares what a caller
publishes and what it gets back, with the topic names under the default prefix.
"""

from __future__ import annotations

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from airlock.core import headers as h
from airlock.core.models import CompletionReply, ErrorReply, LLMRequest
from airlock.core.topics import Topics

VERSION = "1.0.0"

REQUESTS = f"""Publish one `LLMRequest` (UTF-8 JSON) per record. Every record must be signed
(see docs/signing.md): headers `{h.CLIENT_ID}`, `{h.KEY_ID}`, `{h.TIMESTAMP}` (Unix seconds),
`{h.REQUEST_ID}` (equal to the body's `request_id`) and `{h.SIGNATURE}`
(`v1=` + hex HMAC-SHA256). Key the record `<client_id>/<request_id>` and publish it to
partition `SHA-256("<client_id>/<request_id>")[0:8] (big-endian) mod partitions`; a record
on another partition is moved there first (one extra hop). Unsigned or badly signed records
are dead-lettered and audited, never answered."""

REPLIES = f"""One reply per request, keyed by `request_id`, on the `reply_to` topic the request
named: the client's own `airlock.responses.<client>` (readable only by the client's Kafka
principal), or another `airlock.responses.<name>` that the client's grants name. Header
`{h.REPLY_KIND}` is `completion` or `error`; so is the body's `kind`. Errors carry a stable
`code` (see `airlock.core.errors.ErrorCode`), a human `message`, the `request_id`, and for
quota and rate refusals `retry_after` (seconds); `replayed` and `duplicate_request` name the
original request's `airlock_id` in `duplicate_of`. Read with `isolation.level=read_committed`."""


def contract() -> AsyncAPI:
    """The AsyncAPI document of what callers publish and receive."""
    topics = Topics()
    broker = KafkaBroker(
        "kafka:9092",
        description="Your Airlock deployment's Kafka cluster (topic names shown with the default prefix).",
    )

    @broker.subscriber(topics.requests, title="requests", description=REQUESTS)
    async def request(body: LLMRequest) -> None:
        """A signed request from an internal system."""

    broker.publisher(
        topics.responses + ".{client}", title="replies", description=REPLIES, schema=CompletionReply | ErrorReply
    )
    return AsyncAPI(
        broker,
        title="Airlock request/reply contract",
        version=VERSION,
        description="How an internal system asks Airlock for a model answer and receives it.",
    )
