"""The ``airlock`` command line.

Every command that talks to Kafka honours ``AIRLOCK_KAFKA_BOOTSTRAP`` (default
``127.0.0.1:9092``) and ``AIRLOCK_KAFKA_TOPIC_PREFIX``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from typing import Annotated, Any, NoReturn

import typer

from airlock.core.settings import KafkaSettings, SettingsError, TopicSettings, load

app = typer.Typer(
    help="Airlock: a Kafka-native gateway to the OpenAI API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
dev = typer.Typer(help="The local stack: broker, fake OpenAI server, services.", no_args_is_help=True)
topics_app = typer.Typer(help="Topic provisioning.", no_args_is_help=True)
audit = typer.Typer(help="The audit ledger.", no_args_is_help=True)
app.add_typer(dev, name="dev")
app.add_typer(topics_app, name="topics")
app.add_typer(audit, name="audit")


def _kafka() -> KafkaSettings:
    try:
        return load(KafkaSettings)
    except SettingsError as error:
        _fail(str(error))


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def parse_scale(spec: str) -> dict[str, int]:
    """``redactor=3,llm-worker=2`` → ``{"redactor": 3, "llm-worker": 2}``."""
    from airlock.devstack.mesh import SERVICES

    scale: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = part.partition("=")
        if name not in SERVICES or not count.isdigit() or int(count) < 1:
            raise typer.BadParameter(
                f"{part!r}: expected <service>=<replicas> with service one of {', '.join(SERVICES)}"
            )
        scale[name] = int(count)
    return scale


# -- dev ---------------------------------------------------------------------------------------


@dev.command("up")
def dev_up(
    scale: Annotated[
        str,
        typer.Option(help="Replicas per service, e.g. redactor=3,llm-worker=2 (at most the input topic's partitions)."),
    ] = "",
    demo: Annotated[bool, typer.Option(help="Send a demo request once the stack is up.")] = True,
    latency_ms: Annotated[float, typer.Option(help="Latency of the fake model.")] = 0.0,
    partitions: Annotated[
        int, typer.Option(help="Partitions per pipeline topic (bounds the replicas of each stage).")
    ] = 6,
) -> None:
    """Start broker, fake OpenAI (unless OPENAI_API_KEY is set), topics and the four services."""
    from airlock.devstack.kafka import MissingPrerequisite
    from airlock.devstack.paths import state_dir
    from airlock.devstack.stack import LocalStack

    replicas = parse_scale(scale)
    too_many = {name: n for name, n in replicas.items() if n > partitions}
    if too_many:
        _fail(f"replicas above the {partitions} partitions of the input topics would sit idle: {too_many}")
    kafka = _kafka()
    real = bool(os.environ.get("OPENAI_API_KEY"))
    stack = LocalStack(
        state_dir(),
        bootstrap=kafka.bootstrap,
        topic_prefix=kafka.topic_prefix,
        real_openai=real,
        partitions=partitions,
        latency_ms=latency_ms,
    )
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        started = time.monotonic()
        try:
            broker = stack.start_broker()
        except MissingPrerequisite as error:
            _fail(str(error))
        typer.echo(f"kafka        {broker.bootstrap}  (Apache Kafka {broker.version}, KRaft; data {broker.data_dir})")
        fake = stack.start_fake()
        if fake is not None:
            typer.echo(f"fake-openai  {fake.base_url}  (latency {latency_ms:g} ms; control API /_fake/*)")
        else:
            typer.echo(f"openai       {os.environ.get('OPENAI_BASE_URL', 'https://api.openai.com/v1')}  (real API)")
        created = asyncio.run(stack.provision())
        typer.echo(f"topics       {stack.topic_prefix}*  ({len(created)} created, {partitions} partitions each)")
        asyncio.run(stack.start_services(replicas))
        assert stack.mesh is not None
        for name, running in stack.mesh.replicas.items():
            pids = ", ".join(str(p.process.pid) for p in running)
            typer.echo(
                f"{name:<12} {len(running)} replica(s), group airlock-{name}, pid {pids}  (log {running[0].log_path})"
            )
        typer.echo(f"ready in {time.monotonic() - started:.1f}s")
        if demo:
            asyncio.run(_demo(stack))
        typer.echo('\nserving; try: .venv/bin/airlock send "Hi, I am Jane Roe, mail jane@example.com"  (Ctrl-C stops)')
        while True:
            time.sleep(1)
            if stack.mesh.exited():
                dead = ", ".join(f"{p.service}-{p.replica}" for p in stack.mesh.exited())
                typer.echo(f"warning: replica exited: {dead}", err=True)
                for p in stack.mesh.exited():
                    stack.mesh.replicas[p.service].remove(p)
    except KeyboardInterrupt:
        typer.echo("\nstopping…")
    finally:
        stack.stop()
        typer.echo("stopped")


async def _demo(stack: Any) -> None:
    from airlock.client import AirlockClient
    from airlock.devstack.ledger import wait_for_timeline

    text = "Hi, I am Jane Roe. Mail me at jane.roe@example.com or call +1 415 555 0134 about my order."
    typer.echo("\n── demo ──────────────────────────────────────────────────────────────")
    typer.echo(f"request      {text}")
    async with AirlockClient(stack.kafka_settings, "demo-cli") as client:
        request = client.build(text, tenant="demo", model="gpt-4o-mini")
        reply = await client.ask(request, timeout=120)
    if stack.fake is not None:
        seen = [b for b in stack.fake.received() if any(m.get("content") for m in b.get("messages", []))]
        if seen:
            typer.echo(f"(a) model saw  {seen[-1]['messages'][-1]['content']}")
    typer.echo(f"(b) answer     {getattr(reply, 'content', None) or reply.model_dump_json()}")
    timeline = await wait_for_timeline(stack.kafka_settings, request.request_id)
    typer.echo("(c) audit timeline (from the sealed ledger)")
    for line in format_timeline(timeline):
        typer.echo(f"    {line}")


@dev.command("fake-openai")
def dev_fake_openai(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    latency_ms: Annotated[float, typer.Option(help="Delay before each answer.")] = 0.0,
) -> None:
    """Serve only the fake OpenAI API (foreground)."""
    from airlock.devstack.fake_openai import serve

    serve(port=port, latency_ms=latency_ms)


@dev.command("env")
def dev_env() -> None:
    """Print the environment to run one service by hand against `airlock dev up`'s stack."""
    from airlock.devstack.paths import state_dir
    from airlock.devstack.stack import ensure_vault_keys

    kafka = _kafka()
    typer.echo(f"export AIRLOCK_KAFKA_BOOTSTRAP={kafka.bootstrap}")
    typer.echo(f"export AIRLOCK_KAFKA_TOPIC_PREFIX={kafka.topic_prefix}")
    typer.echo(f"export AIRLOCK_REDACTOR_VAULT_KEYS_FILE={ensure_vault_keys(state_dir())}")


# -- topics ------------------------------------------------------------------------------------


@topics_app.command("provision")
def topics_provision() -> None:
    """Create missing topics and grow partitions (idempotent); AIRLOCK_TOPICS_* set counts and retention."""
    from airlock.core.admin import provision
    from airlock.core.topics import Topics

    kafka = _kafka()
    settings = load(TopicSettings)
    created = asyncio.run(provision(kafka, Topics(kafka.topic_prefix).specs(settings)))
    typer.echo(f"created {len(created)} topic(s): {', '.join(created) or '-'}")


# -- send --------------------------------------------------------------------------------------


@app.command("send")
def send(
    text: Annotated[str, typer.Argument(help="The user message.")],
    tenant: Annotated[str, typer.Option(help="Tenant billed.")] = "demo",
    model: Annotated[str, typer.Option(help="Logical model name.")] = "gpt-4o-mini",
    use_case: Annotated[str, typer.Option(help="Use case (selects policies).")] = "default",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reply.")] = 60.0,
    client_id: Annotated[str, typer.Option(help="This client's id.")] = "airlock-cli",
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole reply as JSON.")] = False,
) -> None:
    """Publish a request to the running stack, wait for the reply and print it."""
    from airlock.client import AirlockClient, ReplyTimeout
    from airlock.core.models import ErrorReply

    kafka = _kafka()

    async def run() -> Any:
        async with AirlockClient(kafka, client_id) as client:
            request = client.build(text, tenant=tenant, model=model, use_case=use_case)
            return await client.ask(request, timeout=timeout)

    try:
        reply = asyncio.run(run())
    except ReplyTimeout as error:
        _fail(str(error), code=3)
    except Exception as error:  # connection problems: one clear line
        _fail(f"cannot reach Kafka at {kafka.bootstrap}: {type(error).__name__}: {error}")
    if as_json:
        typer.echo(reply.model_dump_json(indent=2))
    elif isinstance(reply, ErrorReply):
        typer.echo(f"error {reply.code} ({reply.stage}): {reply.message}  [request {reply.request_id}]", err=True)
    else:
        typer.echo(reply.content)
    if isinstance(reply, ErrorReply):
        raise typer.Exit(1)


# -- redact ------------------------------------------------------------------------------------


@app.command("redact")
def redact(
    jsonl: Annotated[
        bool, typer.Option("--jsonl", help='Each input line is {"text": ...}; one JSON result per line.')
    ] = False,
) -> None:
    """Read text on stdin and print what the redactor makes of it, as JSON."""
    from airlock.redactor.redaction import build_redactor
    from airlock.redactor.settings import RedactorSettings

    redactor = build_redactor(load(RedactorSettings))

    def result(text: str) -> dict[str, Any]:
        outcome = redactor.redact([text])
        return {
            "redacted": outcome.texts[0],
            "entities": [
                {"type": s.entity_type, "start": s.start, "end": s.end, "placeholder": s.placeholder}
                for s in outcome.spans[0]
            ],
        }

    if not jsonl:
        typer.echo(json.dumps(result(sys.stdin.read()), ensure_ascii=False))
        return
    for number, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
            if not isinstance(text, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            _fail(f'line {number}: expected a JSON object {{"text": "..."}}')
        typer.echo(json.dumps(result(text), ensure_ascii=False))


# -- audit -------------------------------------------------------------------------------------


def format_timeline(timelines: list[Any]) -> list[str]:
    """Human lines for request timelines: time, stage, transition, the notable details."""
    lines = []
    for timeline in timelines:
        tenant = timeline.events[0].get("tenant", "-")
        lines.append(f"airlock id {timeline.airlock_id}  request {timeline.request_id}  tenant {tenant}")
        for event in timeline.events:
            details = event.get("details", {})
            notes = []
            for key in ("model", "policy_version", "finish_reason", "error_code"):
                if details.get(key):
                    notes.append(f"{key}={details[key]}")
            if details.get("entity_counts"):
                notes.append("masked=" + ",".join(f"{k}:{v}" for k, v in details["entity_counts"].items()))
            if details.get("usage"):
                usage = details["usage"]
                notes.append(f"tokens={usage.get('input_tokens', 0)}+{usage.get('output_tokens', 0)}")
            if event.get("kind") == "notice":
                transition = "notice"
            else:
                transition = f"{event.get('from_state') or '∅'} → {event.get('to_state')}"
            lines.append(
                f"  {event.get('at', '')[:23]}  {event.get('stage', ''):<10} {transition:<24} {' '.join(notes)}"
            )
    return lines


@audit.command("replay")
def audit_replay(
    request_id: Annotated[str | None, typer.Option(help="Only this request's timeline.")] = None,
    output_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Read the ledger from Kafka, verify the hash chains, and print request timelines."""
    from airlock.auditor.reader import read_ledger
    from airlock.auditor.replay import replay
    from airlock.core.topics import Topics

    kafka = _kafka()
    ledger = asyncio.run(read_ledger(kafka, Topics(kafka.topic_prefix).ledger))
    report = replay({p: [v for _, v in records] for p, records in ledger.items()}, request_id=request_id)
    timelines = list(report.timelines.values())
    if output_format == "json":
        typer.echo(
            json.dumps(
                {
                    "records": report.records,
                    "valid": report.valid,
                    "findings": [f.__dict__ for f in report.findings],
                    "requests": [
                        {"airlock_id": t.airlock_id, "request_id": t.request_id, "events": t.events} for t in timelines
                    ],
                },
                indent=2,
                default=str,
            )
        )
    else:
        for line in format_timeline(timelines):
            typer.echo(line)
        typer.echo(f"{report.valid}/{report.records} ledger records valid; {len(timelines)} request(s)")
        for finding in report.findings:
            typer.echo(f"  {finding.kind}: partition {finding.partition} seq {finding.seq}: {finding.detail}")
    if request_id and not timelines:
        _fail(f"no ledger records for request {request_id}", code=1)
    if not report.ok:
        raise typer.Exit(1)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
