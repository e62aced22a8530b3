"""The client: publishes :class:`LLMRequest` records and matches replies by request id."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, OutOfOrderSequenceNumber
from opentelemetry import trace
from opentelemetry.trace import SpanKind, TracerProvider
from pydantic import ValidationError

from airlock.client.credentials import ClientCredentials
from airlock.core import headers as h
from airlock.core.admin import partition_counts
from airlock.core.authenticity import DoorCheck, RecordRefused, Trust
from airlock.core.models import (
    ChatMessage,
    ChatParams,
    CompletionReply,
    ErrorReply,
    LLMRequest,
    reply_adapter,
)
from airlock.core.reading import committed_reader
from airlock.core.settings import KafkaSettings
from airlock.core.signing import request_key, request_partition
from airlock.core.telemetry.tracing import (
    MESSAGING_DESTINATION,
    MESSAGING_OPERATION_TYPE,
    MESSAGING_PARTITION,
    MESSAGING_SYSTEM,
    trace_headers,
)
from airlock.core.topics import Topics
from airlock.core.topology import REPLYING_STAGES

log = logging.getLogger(__name__)


class ReplyTimeout(TimeoutError):
    """No reply arrived for a request within the timeout."""


class AirlockClient:
    """Sends requests to Airlock and awaits their replies.

    Use as an async context manager. Replies are read from ``reply_to`` (default: the
    client's own ``<prefix>responses.<client>``, which only its Kafka principal may read)
    with ``read_committed``, from the moment the client started.

    Every record is signed with the client's credentials (``docs/signing.md``) and published
    to the request partition its ``(client, request id)`` maps to, where ingest looks for
    replays and duplicates.

    Each publish is a span (OpenTelemetry, kind producer) whose W3C ``traceparent`` goes out
    in the record's headers: the request's trace starts here and every Airlock stage
    continues it. Without a configured tracer provider no span is recorded and no header
    is added (unless the caller's own span is current: its context is propagated).

    Args:
        kafka: Connection settings.
        client_id: This internal system's id; defaults to the credentials' client.
        reply_to: Reply topic; defaults to the client's own ``<prefix>responses.<client>``.
        credentials: Signing key; by default read from the environment
            (:meth:`ClientCredentials.from_env`). Without credentials records go out unsigned
            and ingest refuses them.
        tracer_provider: Where publish spans go; by default OpenTelemetry's global provider.
        trust: The mesh's public keys (``trust.json`` from ``airlock ops mesh-keys``); by
            default the file ``AIRLOCK_CLIENT_TRUST_FILE`` names. A reply counts only when a
            replying stage signed it for this reply topic, it names this client, and it
            answers a request this client is waiting for; anything else is logged and dropped.
        verify_replies: ``False`` takes replies without checking their signature (the
            client and request ids are still checked); only for a mesh without stage keys.

    Raises:
        ValueError: No client id, credentials that belong to another client, or no trust
            to verify replies with.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        client_id: str | None = None,
        *,
        reply_to: str | None = None,
        credentials: ClientCredentials | None = None,
        tracer_provider: TracerProvider | None = None,
        trust: Trust | None = None,
        verify_replies: bool = True,
    ) -> None:
        credentials = credentials or ClientCredentials.from_env()
        if credentials is not None and client_id not in (None, credentials.client_id):
            raise ValueError(
                f"client id {client_id!r} does not match the credentials' client {credentials.client_id!r}"
            )
        resolved = client_id or (credentials.client_id if credentials else None)
        if not resolved:
            raise ValueError("a client id is needed: pass client_id or credentials")
        if credentials is None:
            log.warning("client %s has no signing credentials: ingest will refuse its requests", resolved)
        self._kafka = kafka
        self._credentials = credentials
        self.topics = Topics(kafka.topic_prefix)
        self.client_id: str = resolved
        self.reply_to = reply_to or self.topics.reply_topic(resolved)
        self._replies = _reply_check(self.reply_to, trust) if verify_replies else None
        self._request_partitions = 0
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._listener: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[CompletionReply | ErrorReply]] = {}
        self._early: dict[str, CompletionReply | ErrorReply] = {}
        self._mine: set[str] = set()
        self._renewing = asyncio.Lock()
        self._retired: set[asyncio.Task[None]] = set()
        self._tracer = trace.get_tracer("airlock.client", tracer_provider=tracer_provider)

    async def __aenter__(self) -> AirlockClient:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect, and start listening for replies from the current end of the reply topic."""
        counts = await partition_counts(self._kafka, [self.reply_to, self.topics.requests])
        count = counts.get(self.reply_to, 0)
        if not count:
            raise LookupError(
                f"reply topic {self.reply_to} does not exist (or this principal may not read it): "
                "provision the client with `airlock clients provision`"
            )
        self._request_partitions = counts.get(self.topics.requests, 0)
        self._producer = AIOKafkaProducer(**self._kafka.client_args(), enable_idempotence=True, acks="all")
        await self._producer.start()
        self._consumer = committed_reader(self._kafka)
        await self._consumer.start()
        tps = [TopicPartition(self.reply_to, p) for p in range(count)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            await self._consumer.position(tp)  # resolve now, so no reply is missed
        self._listener = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        """Stop listening and disconnect."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def _listen(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    where = f"{record.partition}/{record.offset}"
                    try:
                        if self._replies is not None:
                            self._replies.record_signer(record)
                        reply = reply_adapter.validate_json(record.value or b"")
                    except RecordRefused as refused:  # before ValueError, which it is
                        log.warning("ignoring a reply at %s that Airlock did not sign: %s", where, refused)
                        continue
                    except ValidationError:
                        log.warning("ignoring unreadable reply at %s", where)
                        continue
                    if reply.client_id != self.client_id:
                        log.warning("ignoring a reply at %s for another client", where)
                        continue
                    self._deliver(reply)

    def _deliver(self, reply: CompletionReply | ErrorReply) -> None:
        request_id = reply.request_id or ""
        if request_id not in self._mine:
            return  # a reply to a request this client no longer waits for (or never sent)
        future = self._waiting.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(reply)
        else:
            self._early[request_id] = reply

    def build(
        self,
        content: str | Sequence[ChatMessage],
        *,
        tenant: str,
        model: str,
        use_case: str = "default",
        params: ChatParams | None = None,
        request_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> LLMRequest:
        """A request from this client (a single user message when ``content`` is text)."""
        messages = [ChatMessage(role="user", content=content)] if isinstance(content, str) else list(content)
        return LLMRequest(
            request_id=request_id or str(uuid.uuid4()),
            client_id=self.client_id,
            tenant=tenant,
            use_case=use_case,
            model=model,
            messages=messages,
            params=params or ChatParams(),
            reply_to=self.reply_to,
            metadata=metadata or {},
        )

    async def publish(self, request: LLMRequest) -> None:
        """Publish a request (without waiting for the reply)."""
        await self.publish_raw(request.to_bytes(), request_id=request.request_id, reply_to=request.reply_to)

    async def publish_raw(
        self,
        value: bytes,
        *,
        request_id: str | None = None,
        reply_to: str | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        sign: bool = True,
    ) -> str | None:
        """Publish arbitrary bytes to the request topic, signed (tests, other producers' behaviour).

        Args:
            value: The exact record value.
            request_id: The request id to sign and route by; by default the body's
                ``request_id`` when it is JSON with one, else a new id (when signing).
            reply_to: Sent as the ``airlock-reply-to`` header (used for unreadable bodies).
            headers: More headers.
            sign: False publishes exactly ``headers`` (plus the request id and reply topic).

        Returns:
            The request id the record was published under, if any.
        """
        assert self._producer is not None, "start the client first"
        request_id = request_id or _body_request_id(value)
        if request_id is None and sign and self._credentials is not None:
            request_id = str(uuid.uuid4())
        all_headers = list(headers)
        if request_id:
            self._mine.add(request_id)
            if sign and self._credentials is not None:
                all_headers += self._credentials.headers(request_id=request_id, timestamp=int(time.time()), body=value)
            else:
                all_headers.append((h.REQUEST_ID, request_id.encode()))
        if reply_to:
            all_headers.append((h.REPLY_TO, reply_to.encode()))
        partition = None
        if request_id and self._request_partitions:
            partition = request_partition(self.client_id, request_id, self._request_partitions)
        key = request_key(self.client_id, request_id) if request_id else None
        attributes = {
            MESSAGING_SYSTEM: "kafka",
            MESSAGING_DESTINATION: self.topics.requests,
            MESSAGING_OPERATION_TYPE: "send",
            "airlock.request_id": request_id or "",
            "airlock.client_id": self.client_id,
        }
        if partition is not None:
            attributes[MESSAGING_PARTITION] = str(partition)
        with self._tracer.start_as_current_span(
            f"send {self.topics.requests}", kind=SpanKind.PRODUCER, attributes=attributes, record_exception=False
        ):
            if not any(name in h.TRACE_HEADERS for name, _ in all_headers):
                all_headers += trace_headers()
            await self._send(self.topics.requests, value, key=key, headers=all_headers, partition=partition)
        return request_id

    async def _send(self, topic: str, value: bytes, **options: Any) -> None:
        """Send one record and wait for the broker; after a sequence gap, with a new producer.

        aiokafka's idempotent producer does not recover from a gap in its sequence numbers (a
        batch lost while the broker restarted): the broker refuses every later record with
        ``OutOfOrderSequenceNumber``, forever. It refused this record too, so a new producer
        (a new producer id) sends it once more.
        """
        producer = self._producer
        assert producer is not None, "start the client first"
        try:
            await producer.send_and_wait(topic, value, **options)
        except OutOfOrderSequenceNumber:
            await (await self._renewed(producer)).send_and_wait(topic, value, **options)

    async def _renewed(self, failed: AIOKafkaProducer) -> AIOKafkaProducer:
        async with self._renewing:
            if self._producer is failed:
                log.warning("the request producer lost its sequence (broker restart?); starting a new one")
                replacement = AIOKafkaProducer(**self._kafka.client_args(), enable_idempotence=True, acks="all")
                await replacement.start()
                self._producer = replacement
                stopping = asyncio.create_task(_stop_quietly(failed))
                self._retired.add(stopping)
                stopping.add_done_callback(self._retired.discard)
        assert self._producer is not None
        return self._producer

    def expect(self, request_id: str) -> None:
        """Keep the reply to ``request_id``, a request published by other means than this client."""
        self._mine.add(request_id)

    async def wait(self, request_id: str, timeout: float = 60.0) -> CompletionReply | ErrorReply:
        """Wait for the reply to ``request_id``.

        Raises:
            ReplyTimeout: When none arrives within ``timeout`` seconds.
        """
        early = self._early.pop(request_id, None)
        if early is not None:
            self._mine.discard(request_id)
            return early
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise ReplyTimeout(f"no reply to {request_id} within {timeout:.0f}s") from None
        finally:
            self._waiting.pop(request_id, None)
            self._mine.discard(request_id)

    async def ask(self, request: LLMRequest, timeout: float = 60.0) -> CompletionReply | ErrorReply:
        """Publish ``request`` and wait for its reply."""
        await self.publish(request)
        return await self.wait(request.request_id, timeout)


#: Where clients find the mesh's public keys (the trust file; public, not a secret).
TRUST_FILE_VARIABLE = "AIRLOCK_CLIENT_TRUST_FILE"


def _reply_check(reply_to: str, trust: Trust | None) -> DoorCheck:
    """The check of ``reply_to``'s records: signed by a stage that answers callers.

    Raises:
        ValueError: No trust given and none configured.
    """
    if trust is None:
        path = os.environ.get(TRUST_FILE_VARIABLE)
        if not path:
            raise ValueError(
                f"replies cannot be verified: pass trust= or set {TRUST_FILE_VARIABLE} to the mesh's trust.json "
                "(`airlock ops mesh-keys`); verify_replies=False takes unsigned replies"
            )
        try:
            trust = Trust.from_json(Path(path).read_text())
        except OSError as error:
            raise ValueError(f"{TRUST_FILE_VARIABLE}: cannot read {path}: {error.strerror}") from None
    return DoorCheck(trust, {reply_to: REPLYING_STAGES})


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    """Stop a producer that is being replaced (its pending records fail; their senders saw why)."""
    try:
        await asyncio.wait_for(producer.stop(), 30)
    except (KafkaError, TimeoutError) as error:
        log.debug("stopping a replaced producer: %s", error)


def _body_request_id(value: bytes) -> str | None:
    """The ``request_id`` of a JSON body, if it has a string one."""
    try:
        document = json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    request_id = document.get("request_id") if isinstance(document, dict) else None
    return request_id if isinstance(request_id, str) and request_id else None
