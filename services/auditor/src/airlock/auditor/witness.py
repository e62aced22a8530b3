"""The witness: every checkpoint, also kept outside Kafka, written once.

Kafka alone cannot prove that its newest records were not removed: whoever can truncate
the ledger can truncate the checkpoint topic too (CloudTrail's gap). The witness is a
directory meant for write-once object storage (S3 Object Lock, GCS retention, a WORM mount):

```
<root>/<ledger topic>/keys/<key id>.json            public signing keys, written once each
<root>/<ledger topic>/<partition>/<seq:016d>.json  one signed checkpoint per file
```

One immutable file per checkpoint maps onto object stores, which cannot append. A file is
written to a temporary name, flushed to disk and then linked into place, so it appears
whole or not at all and an existing file is never replaced. The auditor writes a
checkpoint here *before* the Kafka transaction carrying it commits, so the witness always
knows at least as much as the checkpoint topic: a verifier that finds a witnessed
checkpoint beyond the end of the ledger has found a truncated ledger.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from airlock.auditor.signing import Checkpoint, KeyConflict, PublicKeys
from airlock.core.crypto import KeyRingError


class WitnessConflict(RuntimeError):
    """The witness already holds a different checkpoint for the same position (a fork)."""


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_once(path: Path, content: bytes) -> bool:
    """Create ``path`` with ``content`` unless it exists; ``True`` when this call created it.

    Raises:
        OSError: When the file cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # fails instead of replacing an existing file
        except FileExistsError:
            return False
        _fsync_dir(path.parent)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


@dataclass(frozen=True)
class Witness:
    """A ledger's witness directory.

    Args:
        root: The configured witness root (shared by several ledgers).
        ledger: The ledger topic; its checkpoints live under ``root/ledger``.
    """

    root: Path
    ledger: str

    @property
    def directory(self) -> Path:
        """The part of the witness that belongs to this ledger."""
        return self.root / self.ledger

    def checkpoint_path(self, checkpoint: Checkpoint) -> Path:
        """Where a checkpoint is kept."""
        return self.directory / str(checkpoint.partition) / f"{checkpoint.seq:016d}.json"

    def record(self, checkpoint: Checkpoint) -> Path:
        """Keep ``checkpoint``; idempotent for the same position and hash.

        Re-sealing after a crash re-creates the same chain, so a checkpoint at a position
        already witnessed (an earlier, aborted transaction) carries the same hash and is
        already covered.

        Raises:
            WitnessConflict: When a different hash is already witnessed at that position;
                the new checkpoint is kept next to it, so the fork is evidence too.
            OSError: When the directory cannot be written.
        """
        path = self.checkpoint_path(checkpoint)
        if write_once(path, checkpoint.to_bytes() + b"\n"):
            return path
        existing = Checkpoint.parse(path.read_bytes())
        if existing is not None and (existing.ledger, existing.hash) == (checkpoint.ledger, checkpoint.hash):
            return path
        fork = path.with_name(f"{checkpoint.seq:016d}-{checkpoint.hash[:16]}.json")
        write_once(fork, checkpoint.to_bytes() + b"\n")
        raise WitnessConflict(f"witness holds a different checkpoint at {path}; kept this one as {fork.name}")

    def publish_keys(self, keys: PublicKeys) -> None:
        """Keep each public key once, so checkpoints stay verifiable after rotation.

        Raises:
            KeyConflict: When a key id is already witnessed with a different key.
        """
        for key_id in keys.keys:
            path = self.directory / "keys" / f"{key_id}.json"
            content = json.dumps({"key_id": key_id, **keys.entry(key_id)}).encode() + b"\n"
            if not write_once(path, content) and path.read_bytes() != content:
                raise KeyConflict(f"witness already holds a different public key for key id {key_id!r} ({path})")


@dataclass
class WitnessContents:
    """What a witness directory holds.

    Attributes:
        checkpoints: ``(file name relative to the ledger's directory, bytes)``.
        keys: The public keys kept in it.
        problems: Files that could not be read as keys.
    """

    checkpoints: list[tuple[str, bytes]] = field(default_factory=list)
    keys: PublicKeys = field(default_factory=PublicKeys)
    problems: list[str] = field(default_factory=list)


def read_witness(directory: Path) -> WitnessContents:
    """Everything under one ledger's witness directory (``root/ledger``, or a bundle's copy)."""
    contents = WitnessContents()
    if not directory.is_dir():
        return contents
    for child in sorted(directory.iterdir()):
        if child.name == "keys" and child.is_dir():
            for key_file in sorted(child.glob("*.json")):
                try:
                    entry = json.loads(key_file.read_text())
                    key = PublicKeys.from_entries({str(entry["key_id"]): entry})
                    contents.keys = contents.keys.merged(key)
                except (ValueError, KeyError, TypeError, KeyRingError, KeyConflict) as error:
                    contents.problems.append(f"{key_file.name}: {error}")
        elif child.is_dir() and child.name.isdigit():
            for checkpoint_file in sorted(child.glob("*.json")):
                name = f"{child.name}/{checkpoint_file.name}"
                contents.checkpoints.append((name, checkpoint_file.read_bytes().strip()))
    return contents
