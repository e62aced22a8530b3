from starlette.testclient import TestClient

from airlock.devstack.fake_openai import FakeOpenAI

AUTH = {"Authorization": "Bearer test"}


def chat(client: TestClient, text: str) -> object:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    return client.post("/v1/chat/completions", json=body, headers=AUTH)


def test_answer_quotes_last_user_message_and_fills_usage() -> None:
    fake = FakeOpenAI()
    with TestClient(fake.app) as client:
        response = chat(client, "hello <PERSON_1>")
    body = response.json()
    assert response.status_code == 200
    assert body["choices"][0]["message"]["content"] == 'You said: "hello <PERSON_1>"'
    assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["total_tokens"] > body["usage"]["prompt_tokens"]
    assert fake.received[-1]["messages"][0]["content"] == "hello <PERSON_1>"


def test_marker_injects_a_429_with_retry_after() -> None:
    with TestClient(FakeOpenAI().app) as client:
        response = chat(client, "please fail [[fake:429]]")
    assert response.status_code == 429 and response.headers["retry-after"] == "1"


def test_configured_fault_applies_for_a_count_then_recovers() -> None:
    with TestClient(FakeOpenAI().app) as client:
        client.put("/_fake/config", json={"fault": "500", "fault_count": 2})
        statuses = [chat(client, "hi").status_code for _ in range(3)]
    assert statuses == [500, 500, 200]


def test_length_marker_sets_finish_reason_and_missing_key_is_refused() -> None:
    with TestClient(FakeOpenAI().app) as client:
        cut = chat(client, "long [[fake:length]]").json()
        unauthorized = client.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert cut["choices"][0]["finish_reason"] == "length"
    assert unauthorized.status_code == 401


def test_targets_have_their_own_faults_and_call_logs() -> None:
    fake = FakeOpenAI()
    with TestClient(fake.app) as client:
        client.put("/_fake/targets/a/config", json={"fault": "500"})
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        failing = client.post("/t/a/v1/chat/completions", json=body, headers=AUTH)
        healthy = client.post("/t/b/v1/chat/completions", json=body, headers=AUTH)
        default = chat(client, "hi")
        calls = client.get("/_fake/targets/a/calls").json()
    assert (failing.status_code, healthy.status_code, default.status_code) == (500, 200, 200)
    assert [(c["status"], c["fault"], c["api"]) for c in calls] == [(500, "500", "openai")]
    assert len(fake.received) == 3  # every target's bodies, for "what did the model see"


def test_azure_route_needs_api_key_header_and_api_version() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}]}
    path = "/t/eu/openai/deployments/mini-eu/chat/completions"
    with TestClient(FakeOpenAI().app) as client:
        no_version = client.post(path, json=body, headers={"api-key": "k"})
        no_key = client.post(f"{path}?api-version=2024-10-21", json=body)
        ok = client.post(f"{path}?api-version=2024-10-21", json=body, headers={"api-key": "k"})
    assert (no_version.status_code, no_key.status_code) == (400, 401)
    assert ok.status_code == 200 and ok.json()["model"] == "mini-eu"
