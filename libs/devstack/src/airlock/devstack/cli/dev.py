"""``airlock dev``: the local stack."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Annotated, Any

import typer

from airlock.devstack.cli.audit import format_timeline
from airlock.devstack.cli.common import fail, kafka_settings

app = typer.Typer(help="The local stack: broker, fake OpenAI server, services.", no_args_is_help=True)


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


@app.command("up")
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
        fail(f"replicas above the {partitions} partitions of the input topics would sit idle: {too_many}")
    kafka = kafka_settings()
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

    # Both explicitly: a process started in the background inherits SIGINT ignored, and
    # Python then never raises KeyboardInterrupt for it.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        started = time.monotonic()
        try:
            broker = stack.start_broker()
        except MissingPrerequisite as error:
            fail(str(error))
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
        # A second Ctrl-C or SIGTERM while stopping must not abandon the broker or the fake.
        stopping = True
        stack.stop()
        typer.echo("stopped")


async def _demo(stack: Any) -> None:
    from airlock.devstack.ledger import wait_for_timeline

    text = "Hi, I am Jane Roe. Mail me at jane.roe@example.com or call +1 415 555 0134 about my order."
    typer.echo("\n── demo ──────────────────────────────────────────────────────────────")
    typer.echo(f"request      {text}")
    async with stack.client() as client:
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


@app.command("fake-openai")
def dev_fake_openai(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    latency_ms: Annotated[float, typer.Option(help="Delay before each answer.")] = 0.0,
) -> None:
    """Serve only the fake OpenAI API (foreground)."""
    from airlock.devstack.fake_openai import serve

    serve(port=port, latency_ms=latency_ms)


@app.command("env")
def dev_env(
    service: Annotated[
        str, typer.Option(help="The service to run: its Kafka principal and signing key (ingest, redactor…).")
    ] = "ingest",
) -> None:
    """Print the environment to run one service by hand against `airlock dev up`'s stack.

    It holds that service's Kafka password (the local stack's, from .airlock/): paste it into a
    shell, not into a file anyone else reads.
    """
    from airlock.core.access import stage_principal
    from airlock.devstack.mesh import SERVICES
    from airlock.devstack.paths import state_dir
    from airlock.devstack.stack import (
        ensure_clients_file,
        ensure_credentials_file,
        ensure_mesh_keys,
        ensure_signing_keys,
        ensure_vault_keys,
        mesh_keys_dir,
        witness_dir,
    )

    if service not in SERVICES:
        fail(f"--service {service!r}: expected one of {', '.join(SERVICES)}")
    kafka = kafka_settings(stage_principal(service))
    for name, value in kafka.environment().items():
        typer.echo(f"export {name}={value}")
    typer.echo(f"export AIRLOCK_MESH_TRUST_FILE={ensure_mesh_keys(state_dir())}")
    typer.echo(f"export AIRLOCK_MESH_SIGNING_KEYS_FILE={mesh_keys_dir(state_dir()) / f'{service}.json'}")
    typer.echo(f"export AIRLOCK_REDACTOR_VAULT_KEYS_FILE={ensure_vault_keys(state_dir())}")
    typer.echo(f"export AIRLOCK_INGEST_CLIENTS_FILE={ensure_clients_file(state_dir())}")
    typer.echo(f"export AIRLOCK_CLIENT_CREDENTIALS_FILE={ensure_credentials_file(state_dir())}")
    typer.echo(f"export AIRLOCK_CLIENT_TRUST_FILE={ensure_mesh_keys(state_dir())}")
    typer.echo(f"export AIRLOCK_AUDITOR_SIGNING_KEYS_FILE={ensure_signing_keys(state_dir())}")
    typer.echo(f"export AIRLOCK_AUDITOR_WITNESS_DIR={witness_dir(state_dir())}")
