"""The committed AsyncAPI document is what `faststream docs gen` makes of the code today."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "asyncapi.json"
REGENERATE = "faststream docs gen airlock.ingest.app:app --out docs/asyncapi.json"


def test_committed_asyncapi_document_is_current(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRLOCK_")}
    subprocess.run(
        [sys.executable, "-m", "faststream", "docs", "gen", "airlock.ingest.app:app", "--out", str(out)],
        check=True,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=120,
    )
    generated = json.loads(out.read_text())
    assert generated == json.loads(COMMITTED.read_text()), f"docs/asyncapi.json is stale: run `{REGENERATE}`"


def test_document_shows_the_request_in_and_both_replies_out() -> None:
    document = json.loads(COMMITTED.read_text())
    channels = document["channels"]
    assert channels["requests"]["address"] == "airlock.requests"
    assert channels["replies"]["address"] == "airlock.responses.{client}"
    assert document["operations"]["requests"]["action"] == "receive"
    assert document["operations"]["replies"]["action"] == "send"
    messages = document["components"]["messages"]
    assert messages["requests:SubscribeMessage"]["payload"] == {"$ref": "#/components/schemas/LLMRequest"}
    reply = document["components"]["schemas"]["replies:Message:Payload"]
    assert {option["$ref"] for option in reply["anyOf"]} == {
        "#/components/schemas/CompletionReply",
        "#/components/schemas/ErrorReply",
    }
    schemas = document["components"]["schemas"]
    assert {"request_id", "client_id", "tenant", "model", "messages", "reply_to"} <= set(
        schemas["LLMRequest"]["required"]
    )
    assert {"code", "message", "retry_after", "duplicate_of"} <= set(schemas["ErrorReply"]["properties"])
    for header in ("airlock-signature", "airlock-key-id", "airlock-timestamp", "airlock-client-id"):
        assert header in channels["requests"]["description"]
