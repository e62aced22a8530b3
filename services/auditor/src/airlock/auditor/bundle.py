"""Offline evidence: an exported bundle of plain files that verifies with no Kafka and no network.

```
DIR/manifest.json          what was exported: ledger, time, filters, per-partition seq ranges
DIR/ledger/<partition>.jsonl   ledger records, one per line, byte for byte as on the topic
DIR/checkpoints.jsonl      checkpoint records, byte for byte as on the topic
DIR/witness/…              a copy of the ledger's witness directory (checkpoints and keys)
DIR/keys.json              the public keys the exporter knew
DIR/README.md              how to check it, with or without Airlock
```

An export with filters holds, per partition, the contiguous run of the chain from the
first record of a selected request to the first checkpoint after its last record: the
chain formula covers whole events, so the records of other requests in between come
along. The manifest is not signed: it says what was exported, the chain and the
checkpoints prove it. For independent assurance a verifier reads the witness from its
write-once store (``--witness``) and pins the public keys (``--keys``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airlock.auditor.chain import parse_record
from airlock.auditor.signing import Checkpoint, KeyConflict, PublicKeys
from airlock.auditor.timelines import Selection, build_timelines, parse_time
from airlock.auditor.verify import Evidence, Segment
from airlock.auditor.witness import WitnessContents, read_witness
from airlock.core.crypto import KeyRingError

BUNDLE_FORMAT = "airlock-audit-bundle/1"


class BundleError(ValueError):
    """The directory is not a readable bundle (or cannot be written)."""


_README = """# Airlock audit evidence

Ledger `{ledger}`, exported {exported_at}.

Check it with `airlock audit verify . --keys FILE` (no Kafka, no network needed), with the
signing keys obtained from the operator out of band, and read the witness from its write-once
store (`--witness ROOT`) instead of this copy. Without pinned keys the bundle would vouch for
itself: verify reports UNVERIFIED (exit 3) unless `--trust-bundled-keys` is given.

To check it by other means:

* `ledger/<partition>.jsonl` holds one record per line. For record `n` of a partition,
  `hash = SHA-256(bytes.fromhex(prev_hash) || JCS(event))` (JCS = RFC 8785 canonical JSON),
  `prev_hash` is record `n-1`'s `hash` (64 zeros for seq 1), and `seq` runs without gaps.
* `checkpoints.jsonl` and `witness/<partition>/*.json` hold signed checkpoints
  `{{schema_version, ledger, partition, seq, hash, time, key_id, signature}}`: the Ed25519
  `signature` (base64) covers the bytes `airlock-ledger-checkpoint/v1\\n` followed by the JCS
  of every other field. A valid checkpoint vouches for every record up to its `seq`.
* `keys.json` and `witness/keys/*.json` hold the public keys (base64 raw Ed25519).
"""


@dataclass(frozen=True)
class Manifest:
    """What a bundle holds (as read back)."""

    ledger: str
    exported_at: datetime
    origin: str
    selection: Selection
    segments: dict[int, Segment]


def _plan(
    partitions: Mapping[int, list[bytes]],
    checkpoints: list[bytes],
    witness: WitnessContents | None,
    selection: Selection,
) -> dict[int, tuple[int, int, Segment]]:
    """Per partition: ``(first position, end position, segment)`` to export."""
    parsed = {p: [parse_record(raw) for raw in raws] for p, raws in partitions.items()}
    if not selection.active:
        plan = {}
        for p, records in parsed.items():
            plan[p] = (0, len(records), Segment())
        return plan
    located = (r for records in parsed.values() for r in records if r is not None)
    wanted: dict[int, tuple[int, int]] = {}
    for timeline in build_timelines(located).values():
        if not selection.matches(timeline):
            continue
        for p, seq in timeline.locations:
            low, high = wanted.get(p, (seq, seq))
            wanted[p] = (min(low, seq), max(high, seq))
    checkpointed: dict[int, list[int]] = {}
    raws = list(checkpoints) + [raw for _, raw in (witness.checkpoints if witness else [])]
    for raw in raws:
        checkpoint = Checkpoint.parse(raw)
        if checkpoint is not None:
            checkpointed.setdefault(checkpoint.partition, []).append(checkpoint.seq)
    plan = {}
    for p, (low, high) in wanted.items():
        records = parsed[p]
        end_seq = min((s for s in checkpointed.get(p, []) if s >= high), default=None)
        start = next(i for i, r in enumerate(records) if r is not None and r.seq >= low)
        if end_seq is None:
            plan[p] = (start, len(records), Segment(first_seq=low, to_end=True))
            continue
        end = next((i + 1 for i, r in enumerate(records) if r is not None and r.seq == end_seq), len(records))
        plan[p] = (start, end, Segment(first_seq=low, to_end=end == len(records)))
    return plan


def write_bundle(
    out: Path,
    *,
    ledger: str,
    partitions: Mapping[int, list[bytes]],
    checkpoints: list[bytes],
    witness: WitnessContents | None,
    witness_dir: Path | None,
    keys: PublicKeys,
    selection: Selection,
    origin: str,
    exported_at: datetime | None = None,
) -> dict[str, Any]:
    """Write a bundle into ``out`` (created; must be empty) and return its manifest.

    Raises:
        BundleError: When ``out`` is not empty.
    """
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out} is not empty")
    exported_at = exported_at or datetime.now(UTC)
    plan = _plan(partitions, checkpoints, witness, selection)
    (out / "ledger").mkdir(parents=True, exist_ok=True)
    segments = {}
    for p, (start, end, segment) in sorted(plan.items()):
        lines = partitions[p][start:end]
        (out / "ledger" / f"{p}.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
        segments[str(p)] = {"first_seq": segment.first_seq, "to_end": segment.to_end, "records": len(lines)}
    kept = []
    for raw in checkpoints:
        checkpoint = Checkpoint.parse(raw)
        if checkpoint is None or checkpoint.partition in plan:
            kept.append(raw)
    (out / "checkpoints.jsonl").write_bytes(b"".join(raw + b"\n" for raw in kept))
    if witness_dir is not None and witness_dir.is_dir():
        for part in ["keys", *(str(p) for p in plan)]:
            if (witness_dir / part).is_dir():
                shutil.copytree(witness_dir / part, out / "witness" / part, dirs_exist_ok=True)
    (out / "keys.json").write_text(keys.to_json() + "\n")
    manifest = {
        "format": BUNDLE_FORMAT,
        "ledger": ledger,
        "exported_at": exported_at.isoformat(),
        "origin": origin,
        "selection": selection.describe(),
        "partitions": segments,
        "checkpoints": len(kept),
        "witness": witness_dir is not None and witness_dir.is_dir(),
        "keys": sorted(keys.keys),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "README.md").write_text(_README.format(ledger=ledger, exported_at=manifest["exported_at"]))
    return manifest


def read_manifest(directory: Path) -> Manifest:
    """Read ``manifest.json``.

    Raises:
        BundleError: When it is missing or not a bundle manifest.
    """
    try:
        document = json.loads((directory / "manifest.json").read_text())
        if document.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{directory}/manifest.json is not an {BUNDLE_FORMAT} manifest")
        chosen = document.get("selection") or {}
        selection = Selection(
            since=parse_time(chosen.get("from")),
            until=parse_time(chosen.get("to")),
            tenant=chosen.get("tenant"),
            request_ids=frozenset(chosen.get("request_ids") or ()),
        )
        segments = {
            int(p): Segment(first_seq=int(s.get("first_seq", 1)), to_end=bool(s.get("to_end", True)))
            for p, s in (document.get("partitions") or {}).items()
        }
        exported_at = parse_time(document.get("exported_at")) or datetime.now(UTC)
        return Manifest(str(document["ledger"]), exported_at, str(document.get("origin", "")), selection, segments)
    except OSError as error:
        raise BundleError(f"cannot read {directory}/manifest.json: {error.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise BundleError(f"{directory}/manifest.json is malformed: {error}") from None


def _lines(path: Path) -> list[bytes]:
    if not path.exists():
        return []
    return [line for line in path.read_bytes().splitlines() if line]


def read_bundle(directory: Path, *, pinned: PublicKeys | None = None, witness_root: Path | None = None) -> Evidence:
    """The evidence in a bundle, ready for :func:`~airlock.auditor.verify.verify`.

    Args:
        directory: The bundle.
        pinned: Trusted public keys from the verifier; otherwise the keys in the bundle
            (and in the witness read) are used, and the report says so.
        witness_root: Read the witness from this root (its write-once store) instead of
            the bundle's copy.

    Raises:
        BundleError: When the directory is not a readable bundle.
    """
    manifest = read_manifest(directory)
    partitions = {p: _lines(directory / "ledger" / f"{p}.jsonl") for p in manifest.segments}
    for path in sorted((directory / "ledger").glob("*.jsonl")):
        if path.stem.isdigit() and int(path.stem) not in partitions:
            partitions[int(path.stem)] = _lines(path)
    witness_dir = witness_root / manifest.ledger if witness_root else directory / "witness"
    witness = read_witness(witness_dir) if witness_dir.is_dir() else None
    if pinned:
        keys, key_source = pinned, "pinned by the verifier (--keys)"
    else:
        try:
            bundled = PublicKeys.from_json((directory / "keys.json").read_text())
        except (OSError, KeyRingError):
            bundled = PublicKeys()
        try:
            keys = bundled.merged(witness.keys) if witness else bundled
        except KeyConflict as conflict:
            raise BundleError(f"keys.json and the witness disagree: {conflict}") from None
        origin = "the witness store" if witness_root else "the bundle"
        key_source = f"from {origin} (keys.json, witness/keys); pin them with --keys for independent assurance"
    return Evidence(
        ledger=manifest.ledger,
        partitions=partitions,
        checkpoints=_lines(directory / "checkpoints.jsonl"),
        witness=witness,
        keys=keys,
        key_source=key_source,
        segments=manifest.segments,
        as_of=manifest.exported_at,
        origin=f"bundle {directory} (exported from {manifest.origin})",
    )
