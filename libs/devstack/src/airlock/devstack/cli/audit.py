"""``airlock audit``: replay, export and verify the ledger; manage its signing keys.

Exit codes: 0 the evidence verifies; 1 an integrity or lifecycle finding (or the requested
request is not in the ledger); 2 the command could not run (bad option, unreadable input,
Kafka unreachable).
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from airlock.devstack.cli.common import fail, kafka_settings, read_key_ring

if TYPE_CHECKING:
    from airlock.auditor.signing import PublicKeys
    from airlock.auditor.timelines import Selection, Timeline
    from airlock.auditor.verify import Report

app = typer.Typer(help="The audit ledger: replay, export, verify, signing keys.", no_args_is_help=True)

FORMATS = ("table", "json", "html")

From = Annotated[str | None, typer.Option("--from", help="Only requests that started at or after this ISO 8601 time.")]
To = Annotated[str | None, typer.Option("--to", help="Only requests that started at or before this ISO 8601 time.")]
Tenant = Annotated[str | None, typer.Option(help="Only this tenant's requests.")]
RequestIds = Annotated[list[str] | None, typer.Option("--request-id", help="Only this request (repeatable).")]
Format = Annotated[str, typer.Option("--format", help="table, json or html.")]
Out = Annotated[Path | None, typer.Option(help="Write the report to this file instead of stdout.")]
WitnessRoot = Annotated[
    Path | None,
    typer.Option(
        "--witness",
        help="Witness root (AIRLOCK_AUDITOR_WITNESS_DIR; default: the dev stack's .airlock/witness if present).",
    ),
]
KeysFile = Annotated[
    Path | None, typer.Option("--keys", help="Trusted public keys (JSON from `airlock audit keys`), pinned.")
]
MaxInFlight = Annotated[
    float, typer.Option(help="Seconds a request may stay non-terminal before it counts as incomplete.")
]


def format_timeline(timelines: list[Timeline]) -> list[str]:
    """Human lines for request timelines (used by the ``airlock dev up`` demo too)."""
    from airlock.auditor.report import format_timeline as lines

    return lines(timelines)


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r} is not an ISO 8601 time (e.g. 2025-06-01T12:00:00Z)")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _selection(since: str | None, until: str | None, tenant: str | None, request_ids: list[str] | None) -> Selection:
    from airlock.auditor.timelines import Selection

    return Selection(
        since=_time(since, "--from"),
        until=_time(until, "--to"),
        tenant=tenant,
        request_ids=frozenset(request_ids or ()),
    )


def _witness_root(option: Path | None) -> Path | None:
    """The witness root: the option, the auditor's setting, or the dev stack's."""
    if option is not None:
        return option
    configured = os.environ.get("AIRLOCK_AUDITOR_WITNESS_DIR")
    if configured:
        return Path(configured)
    from airlock.devstack.paths import state_dir
    from airlock.devstack.stack import witness_dir

    dev = witness_dir(state_dir(create=False))
    return dev if dev.is_dir() else None


def _pinned(keys_file: Path | None) -> PublicKeys | None:
    if keys_file is None:
        return None
    from airlock.auditor.signing import PublicKeys
    from airlock.core.crypto import KeyRingError

    try:
        return PublicKeys.from_json(keys_file.read_text())
    except OSError as error:
        fail(f"--keys: cannot read {keys_file}: {error.strerror}")
    except KeyRingError as error:
        fail(f"--keys: {error}")


def _check_format(output_format: str) -> None:
    if output_format not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}")


def _emit(report: Report, output_format: str, out: Path | None) -> None:
    """Print or write the report, then exit 1 on any finding."""
    from airlock.auditor.report import render, summary_lines

    text = render(report, output_format)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        summary = summary_lines(report)
        typer.echo(f"wrote {out}: {summary[-1]}; {report.valid}/{report.records} records valid")
    if not report.ok:
        raise typer.Exit(1)


async def _read_kafka(kafka: Any) -> tuple[str, dict[int, list[bytes]], list[bytes]]:
    from airlock.auditor.reader import read_checkpoints, read_ledger
    from airlock.core.topics import Topics

    topics = Topics(kafka.topic_prefix)
    ledger = await read_ledger(kafka, topics.ledger)
    checkpoints = await read_checkpoints(kafka, topics.checkpoints)
    return topics.ledger, {p: [value for _, value in records] for p, records in ledger.items()}, checkpoints


def _from_kafka(witness_option: Path | None, keys_file: Path | None) -> tuple[Any, Path | None]:
    """Evidence read from Kafka and the witness; also the ledger's witness directory."""
    from aiokafka.errors import KafkaError

    from airlock.auditor.signing import KeyConflict
    from airlock.auditor.verify import Evidence
    from airlock.auditor.witness import read_witness

    kafka = kafka_settings()
    try:
        ledger, partitions, checkpoints = asyncio.run(_read_kafka(kafka))
    except (KafkaError, OSError) as error:
        fail(f"cannot read the ledger from Kafka at {kafka.bootstrap}: {error}")
    root = _witness_root(witness_option)
    directory = root / ledger if root else None
    witness = read_witness(directory) if directory is not None and directory.is_dir() else None
    pinned = _pinned(keys_file)
    if pinned:
        keys, key_source = pinned, "pinned (--keys)"
    elif witness is not None:
        keys, key_source = witness.keys, f"from the witness ({directory}/keys)"
    else:
        from airlock.auditor.signing import PublicKeys

        keys, key_source = PublicKeys(), "none: pass --keys or --witness"
    if pinned and witness is not None:
        try:
            keys.merged(witness.keys)
        except KeyConflict as conflict:
            fail(f"the pinned keys and the witness disagree: {conflict}")
    evidence = Evidence(
        ledger=ledger,
        partitions=partitions,
        checkpoints=checkpoints,
        witness=witness,
        keys=keys,
        key_source=key_source,
        origin=f"Kafka {kafka.bootstrap}",
    )
    return evidence, directory


@app.command("replay")
def audit_replay(
    since: From = None,
    until: To = None,
    tenant: Tenant = None,
    request_id: RequestIds = None,
    output_format: Format = "table",
    out: Out = None,
    witness: WitnessRoot = None,
    keys: KeysFile = None,
    max_in_flight: MaxInFlight = 900.0,
) -> None:
    """Read the ledger from Kafka, verify chains, checkpoints and lifecycles, report every request.

    Integrity is always checked on the whole ledger; the filters choose the requests reported.
    """
    from airlock.auditor.verify import verify

    _check_format(output_format)
    selection = _selection(since, until, tenant, request_id)
    evidence, _ = _from_kafka(witness, keys)
    report = verify(evidence, selection, max_in_flight_s=max_in_flight)
    if selection.request_ids and not report.timelines:
        _emit_missing(report, output_format, out, selection)
    _emit(report, output_format, out)


def _emit_missing(report: Report, output_format: str, out: Path | None, selection: Selection) -> None:
    from airlock.auditor.report import render

    if out is None:
        typer.echo(render(report, output_format), nl=False)
    fail(f"no ledger records for request(s) {', '.join(sorted(selection.request_ids))}", code=1)


@app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option(help="Directory to write the bundle into (created; must be empty).")],
    since: From = None,
    until: To = None,
    tenant: Tenant = None,
    request_id: RequestIds = None,
    witness: WitnessRoot = None,
    keys: KeysFile = None,
) -> None:
    """Write the ledger, checkpoints, witness copy and public keys as plain files (see `verify`)."""
    from airlock.auditor.bundle import BundleError, write_bundle

    selection = _selection(since, until, tenant, request_id)
    evidence, witness_dir = _from_kafka(witness, keys)
    if not evidence.keys:
        typer.echo("warning: no public keys known (no witness, no --keys): the bundle cannot be verified", err=True)
    try:
        manifest = write_bundle(
            out,
            ledger=evidence.ledger,
            partitions=evidence.partitions,
            checkpoints=evidence.checkpoints,
            witness=evidence.witness,
            witness_dir=witness_dir,
            keys=evidence.keys,
            selection=selection,
            origin=evidence.origin,
        )
    except (BundleError, OSError) as error:
        fail(f"cannot export to {out}: {error}")
    if not manifest["partitions"]:
        fail("no ledger records match the filters (an empty bundle was written)", code=1)
    records = sum(p["records"] for p in manifest["partitions"].values())
    typer.echo(
        f"exported {records} ledger records of {len(manifest['partitions'])} partition(s), "
        f"{manifest['checkpoints']} checkpoints, keys {', '.join(manifest['keys']) or 'none'}"
        f"{', the witness' if manifest['witness'] else ' (no witness)'} to {out}"
    )
    typer.echo(f"verify offline with: airlock audit verify {out} --keys <the ledger's public keys>")


@app.command("verify")
def audit_verify(
    directory: Annotated[Path, typer.Argument(help="A bundle written by `airlock audit export`.")],
    output_format: Format = "table",
    out: Out = None,
    witness: Annotated[
        Path | None, typer.Option("--witness", help="Read the witness from this root instead of the bundle's copy.")
    ] = None,
    keys: KeysFile = None,
    max_in_flight: MaxInFlight = 900.0,
    trust_bundled_keys: Annotated[
        bool,
        typer.Option(
            help="Accept the public keys inside the bundle itself (whoever can rewrite the bundle can rewrite them)."
        ),
    ] = False,
) -> None:
    """Verify an exported bundle offline (no Kafka, no network): the same checks and report as `replay`.

    The signatures prove something only against keys the verifier already trusts: pin them
    with --keys (from `airlock audit keys`) or --witness. Without either, the bundle vouches for
    itself, and the result is UNVERIFIED (exit 3) unless --trust-bundled-keys says that is enough.
    """
    from airlock.auditor.bundle import BundleError, read_bundle, read_manifest
    from airlock.auditor.verify import verify

    _check_format(output_format)
    if keys is None and witness is None and not trust_bundled_keys:
        fail(
            "UNVERIFIED: no pinned keys; the bundle's own keys would vouch for the bundle. "
            "Pass --keys FILE (from `airlock audit keys`) or --witness DIR, or --trust-bundled-keys",
            code=3,
        )
    try:
        evidence = read_bundle(directory, pinned=_pinned(keys), witness_root=witness)
        selection = read_manifest(directory).selection
    except BundleError as error:
        fail(str(error))
    report = verify(evidence, selection, max_in_flight_s=max_in_flight)
    _emit(report, output_format, out)


@app.command("keys")
def audit_keys(
    ring: Annotated[
        Path | None,
        typer.Option(help="A signing key ring file (AIRLOCK_AUDITOR_SIGNING_KEYS_FILE): print its public keys."),
    ] = None,
    witness: WitnessRoot = None,
    out: Annotated[Path | None, typer.Option(help="Write the public keys here instead of stdout.")] = None,
) -> None:
    """Print the ledger's public signing keys (for `--keys`), from a key ring or the witness."""
    from airlock.auditor.signing import PublicKeys, SigningKeys
    from airlock.auditor.witness import read_witness
    from airlock.core.crypto import KeyRingError
    from airlock.core.topics import Topics

    if ring is not None:
        try:
            public = SigningKeys.load(None, ring, variable="--ring").public_keys()
        except KeyRingError as error:
            fail(str(error))
    else:
        root = _witness_root(witness)
        if root is None:
            fail("pass --ring FILE or --witness DIR")
        public = read_witness(root / Topics(kafka_settings().topic_prefix).ledger).keys
        if not public:
            fail(f"no public keys under {root}")
    text = PublicKeys(public.keys).to_json() + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        typer.echo(f"wrote {len(public.keys)} public key(s) to {out}")


@app.command("rotate-key")
def audit_rotate_key(
    ring: Annotated[Path, typer.Option(help="The signing key ring file to rotate (kept readable by its owner only).")],
    key_id: Annotated[str, typer.Option(help="Id of the new active key.")],
) -> None:
    """Add a new active signing key; old keys stay in the ring (and their public keys in the witness).

    Restart the auditor to sign with it; it publishes the new public key to the witness.
    """
    from airlock.auditor.signing import KEY_ID, SigningKeys
    from airlock.devstack.stack import write_secret

    if not KEY_ID.match(key_id):
        fail(f"--key-id must match {KEY_ID.pattern}")
    current = read_key_ring(ring)
    if key_id in current.keys:
        fail(f"key id {key_id!r} is already in the ring")
    rotated = current.rotated(key_id)
    write_secret(ring, rotated.to_json())
    public = SigningKeys(rotated).public_keys()
    typer.echo(f"active key is now {key_id}; kept {', '.join(sorted(k for k in current.keys))}")
    typer.echo(f"new public key: {public.entry(key_id)['public_key']}")
