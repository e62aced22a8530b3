"""One attempt through the real ``openai`` client, served in-process by the fake's ASGI app.

No sockets: the client's HTTP transport is httpx2's ASGI transport over the fake's Starlette
app, so the SDK's real request building and error mapping are exercised.
"""

from __future__ import annotations

import httpx2
import openai
import pytest

from airlock.core.models import ChatMessage
from airlock.devstack.fake_openai import FakeConfig, FakeOpenAI
from airlock.llm_worker.calls import AttemptFailure, attempt, classify_status, parse_answer, parse_retry_after

MESSAGES = [ChatMessage(role="user", content="hi <PERSON_1>")]


def client(fake: FakeOpenAI, *, azure: bool = False) -> openai.AsyncOpenAI:
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=fake.app))
    if azure:
        return openai.AsyncAzureOpenAI(
            azure_endpoint="http://fake/t/eu", api_version="2024-10-21", api_key="k", max_retries=0, http_client=http
        )
    return openai.AsyncOpenAI(api_key="k", base_url="http://fake/t/a/v1", max_retries=0, http_client=http)


async def test_answer_content_finish_reason_and_usage_are_read() -> None:
    fake = FakeOpenAI()
    answer = await attempt(client(fake), model="gpt-4o-mini", messages=MESSAGES, params={"max_tokens": 9}, timeout_s=5)
    assert answer.content == 'You said: "hi <PERSON_1>"'
    assert answer.finish_reason == "stop" and answer.model == "gpt-4o-mini"
    assert answer.usage.input_tokens > 0 and answer.usage.output_tokens > 0
    assert fake.received[-1]["max_tokens"] == 9
    assert [c["status"] for c in fake.target("a").calls] == [200]


async def test_azure_target_is_called_on_its_deployment_with_api_version() -> None:
    fake = FakeOpenAI()
    answer = await attempt(client(fake, azure=True), model="mini-eu", messages=MESSAGES, params={}, timeout_s=5)
    assert answer.model == "mini-eu"
    [call] = fake.target("eu").calls
    assert call["api"] == "azure" and call["model"] == "mini-eu" and call["status"] == 200


@pytest.mark.parametrize(
    ("fault", "kind", "status"),
    [
        ("429", "rate_limited", 429),
        ("500", "server", 500),
        ("400", "rejected", 400),
        ("404", "target_refused", 404),
        ("malformed", "malformed", None),
    ],
)
async def test_faults_are_classified(fault: str, kind: str, status: int | None) -> None:
    fake = FakeOpenAI(FakeConfig(retry_after_s=2))
    fake.target("a").config.fault = fault
    with pytest.raises(AttemptFailure) as failed:
        await attempt(client(fake), model="m", messages=MESSAGES, params={}, timeout_s=5)
    assert (failed.value.kind, failed.value.status) == (kind, status)
    if fault == "429":
        assert failed.value.retry_after == 2.0
    assert failed.value.retryable is (kind in ("rate_limited", "server", "malformed"))


async def test_timeout_is_bounded_by_the_attempt_timeout() -> None:
    fake = FakeOpenAI(FakeConfig(fault="timeout", timeout_s=30))
    with pytest.raises(AttemptFailure) as failed:
        await attempt(client(fake), model="m", messages=MESSAGES, params={}, timeout_s=0.2)
    assert failed.value.kind == "timeout"


def test_retry_after_headers_in_seconds_milliseconds_and_dates() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:05 GMT"}, now=1445412480.0) == 5.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_status_classification_covers_timeouts_conflicts_and_credentials() -> None:
    assert classify_status(408, {}).kind == "timeout"
    assert classify_status(409, {}).kind == "server"
    assert classify_status(503, {"retry-after": "4"}).retry_after == 4.0
    assert classify_status(401, {}).target_fault and not classify_status(401, {}).retryable
    assert not classify_status(422, {}).target_fault


def test_body_without_choices_is_malformed() -> None:
    with pytest.raises(AttemptFailure, match="not a chat completion"):
        parse_answer(b'{"id": "x", "choices": []}', 1.0)
    answer = parse_answer(b'{"choices": [{"message": {"content": null}, "finish_reason": "content_filter"}]}', 1.0)
    assert answer.content == "" and answer.finish_reason == "content_filter"
