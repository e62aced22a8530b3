"""The clients file: who may sign requests, with which keys, for what, and the tenants' limits.

A YAML file mounted from a Kubernetes Secret (``AIRLOCK_INGEST_CLIENTS_FILE``), managed with
``airlock clients add|rotate|list``, reloaded by ingest when it changes::

    schema_version: 1
    tenants:
      acme: {requests_per_minute: 600, tokens_per_day: 2000000, cost_per_month_usd: 500}
    clients:
      billing:
        keys:
          billing-20250101-1a2b: {secret: <base64, 32 bytes>, created_at: 2025-01-01T00:00:00Z}
        tenants: [acme]
        models: [gpt-4o-mini]
        use_cases: [default]
        reply_topics: []   # besides its own airlock.responses.billing
        max_prompt_chars: 20000
        max_tokens: 1024
        limits: {requests_per_minute: 120}

Everything is denied unless listed. A client always may name its own reply topic,
``<prefix>responses.<client>``, which only its Kafka principal can read. A list entry is an
exact name or a glob (``*`` alone allows anything; ``airlock.responses.billing.*`` a family
of topics). A ``"*"`` entry under ``tenants`` declares every other tenant, with its limits.
A limit left out is not enforced.

Secrets never leave this module as text: they are :class:`~pydantic.SecretStr`, error
messages name fields, never values, and :meth:`ClientsFile.describe` prints no key material.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from airlock.core.models import Identifier
from airlock.core.signing import decode_secret, generate_secret

ANY = "*"

log = logging.getLogger("airlock.ingest.clients")


class ClientsFileError(ValueError):
    """The clients file cannot be read or is invalid; the message holds no file content."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Limits(_Strict):
    """Quotas and budgets; ``None`` means not enforced.

    Attributes:
        requests_per_minute: Requests admitted in any 60 seconds (a sliding window).
        tokens_per_day: Input plus output tokens per calendar day (UTC).
        cost_per_month_usd: Spend per calendar month (UTC), from the llm-worker's prices.
        max_in_flight: Requests admitted and not yet settled (completed or failed) at once.
    """

    requests_per_minute: int | None = Field(default=None, ge=0)
    tokens_per_day: int | None = Field(default=None, ge=0)
    cost_per_month_usd: float | None = Field(default=None, ge=0)
    max_in_flight: int | None = Field(default=None, ge=0)

    @property
    def any(self) -> bool:
        """Whether any limit is set (else admission needs no round trip to the log)."""
        return any(value is not None for value in self.model_dump().values())


class ClientKey(_Strict):
    """One signing key of a client.

    Attributes:
        secret: Standard base64 of 32 random bytes (the HMAC key).
        created_at: When the key was made.
        not_after: After this instant the key no longer verifies (set on rotation).
    """

    secret: SecretStr
    created_at: datetime
    not_after: datetime | None = None

    @field_validator("secret")
    @classmethod
    def _is_key(cls, value: SecretStr) -> SecretStr:
        decode_secret(value.get_secret_value())  # raises ValueError without echoing it
        return value

    def material(self) -> bytes:
        """The HMAC key bytes."""
        return decode_secret(self.secret.get_secret_value())

    def valid_at(self, now: datetime) -> bool:
        """Whether the key still verifies at ``now``."""
        return self.not_after is None or now < self.not_after


class ClientPolicy(_Strict):
    """One internal system: its keys and what it may ask for (deny by default).

    Attributes:
        keys: Key id → key; several may be valid at once (rotation without downtime).
        tenants: Tenants it may bill.
        models: Logical models it may call.
        use_cases: Use cases it may name.
        reply_topics: Reply topics it may name besides its own ``<prefix>responses.<client>``
            (each must also lie under ``<prefix>responses.``).
        max_prompt_chars: Largest prompt (all messages) it may send.
        max_tokens: Largest ``max_tokens`` it may ask for.
        limits: Per-client quotas, on top of the tenant's.
        description: What the system is, for people reading the file.
    """

    keys: dict[Identifier, ClientKey] = Field(default_factory=dict)
    tenants: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    use_cases: list[str] = Field(default_factory=list)
    reply_topics: list[str] = Field(default_factory=list)
    max_prompt_chars: int = Field(ge=1)
    max_tokens: int = Field(ge=1)
    limits: Limits = Limits()
    description: str = ""

    def newest_key(self, now: datetime) -> tuple[str, ClientKey] | None:
        """The key to sign with: valid, preferably not being rotated out, most recent."""
        valid = [(key_id, key) for key_id, key in self.keys.items() if key.valid_at(now)]
        return max(valid, key=lambda item: (item[1].not_after is None, item[1].created_at), default=None)


def allows(patterns: list[str], value: str) -> bool:
    """Whether ``value`` matches one of ``patterns`` (exact names or globs; ``*`` is anything)."""
    return any(pattern == value or fnmatchcase(value, pattern) for pattern in patterns)


class ClientsFile(_Strict):
    """The whole file.

    Attributes:
        tenants: Tenant → its limits; ``"*"`` declares every other tenant.
        clients: Client id → its policy and keys.
    """

    schema_version: Literal[1] = 1
    tenants: dict[str, Limits] = Field(default_factory=dict)
    clients: dict[Identifier, ClientPolicy] = Field(default_factory=dict)

    def tenant_limits(self, tenant: str) -> Limits | None:
        """The tenant's limits, or ``None`` when the tenant is not declared."""
        return self.tenants.get(tenant, self.tenants.get(ANY))

    # -- reading and writing --------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> ClientsFile:
        """Parse YAML (or JSON) text.

        Raises:
            ClientsFileError: With field paths and reasons, never values.
        """
        try:
            document = yaml.safe_load(text) or {}
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ClientsFileError(f"clients file is not valid YAML{where}") from None
        except yaml.YAMLError:
            raise ClientsFileError("clients file is not valid YAML") from None
        try:
            return cls.model_validate(document)
        except ValidationError as error:
            raise ClientsFileError(describe_errors(error)) from None

    @classmethod
    def load(cls, path: Path) -> ClientsFile:
        """Read and parse the file at ``path``."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8"
            raise ClientsFileError(f"cannot read clients file {path}: {reason}") from None
        return cls.parse(text)

    def to_yaml(self) -> str:
        """The YAML form, secrets included: write it only to a secret store."""
        document = self.model_dump(mode="json", exclude_none=True)
        for client_id, policy in self.clients.items():
            for key_id, key in policy.keys.items():
                document["clients"][client_id]["keys"][key_id]["secret"] = key.secret.get_secret_value()
        return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)

    def save(self, path: Path) -> None:
        """Write atomically (a reader never sees half a file), readable by the owner only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(self.to_yaml())
            os.chmod(temporary, 0o600)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def digest(self) -> str:
        """A short fingerprint of the content (logged on reload; reveals nothing)."""
        return fingerprint(self.to_yaml().encode())

    # -- management (``airlock clients``) -------------------------------------------------

    def with_client(self, client_id: str, policy: ClientPolicy) -> ClientsFile:
        """A copy with ``client_id`` added or replaced."""
        return self.model_copy(update={"clients": {**self.clients, client_id: policy}})

    def without_client(self, client_id: str) -> ClientsFile:
        """A copy without ``client_id``."""
        return self.model_copy(update={"clients": {k: v for k, v in self.clients.items() if k != client_id}})

    def with_tenant(self, tenant: str, limits: Limits) -> ClientsFile:
        """A copy with the tenant declared (or its limits replaced)."""
        return self.model_copy(update={"tenants": {**self.tenants, tenant: limits}})

    def rotated(self, client_id: str, *, grace: timedelta, now: datetime | None = None) -> tuple[ClientsFile, str]:
        """A copy where ``client_id`` has a new key and its older keys expire after ``grace``.

        Returns:
            The new file and the new key's id.

        Raises:
            KeyError: Unknown client.
        """
        now = now or datetime.now(UTC)
        policy = self.clients[client_id]
        cutoff = now + grace
        keys = {
            key_id: key
            if key.not_after is not None and key.not_after <= cutoff
            else key.model_copy(update={"not_after": cutoff})
            for key_id, key in policy.keys.items()
        }
        key_id, key = new_key(client_id, now)
        keys[key_id] = key
        return self.with_client(client_id, policy.model_copy(update={"keys": keys})), key_id

    def pruned(self, now: datetime | None = None) -> tuple[ClientsFile, list[tuple[str, str]]]:
        """A copy without the keys that expired (``not_after`` passed): they verify nothing.

        A secret that can no longer be used is still a secret at rest; rotated keys left in the
        file would accumulate in every copy and backup of it.

        Returns:
            The new file and the ``(client, key id)`` pairs removed.
        """
        now = now or datetime.now(UTC)
        removed: list[tuple[str, str]] = []
        clients = {}
        for client_id, policy in self.clients.items():
            kept = {key_id: key for key_id, key in policy.keys.items() if key.valid_at(now)}
            removed += [(client_id, key_id) for key_id in policy.keys if key_id not in kept]
            clients[client_id] = policy.model_copy(update={"keys": kept}) if len(kept) < len(policy.keys) else policy
        return self.model_copy(update={"clients": clients}), removed

    def describe(self, now: datetime | None = None) -> list[str]:
        """Human lines about every tenant and client; never a secret."""
        now = now or datetime.now(UTC)
        lines = []
        for tenant, limits in sorted(self.tenants.items()):
            lines.append(f"tenant {tenant}: {describe_limits(limits)}")
        for client_id, policy in sorted(self.clients.items()):
            lines.append(f"client {client_id}" + (f"  ({policy.description})" if policy.description else ""))
            lines.append(
                f"  tenants {','.join(policy.tenants) or '-'}  models {','.join(policy.models) or '-'}  "
                f"use cases {','.join(policy.use_cases) or '-'}"
            )
            lines.append(
                f"  reply topics {','.join(policy.reply_topics) or '-'}  max prompt {policy.max_prompt_chars} chars  "
                f"max_tokens {policy.max_tokens}  limits {describe_limits(policy.limits)}"
            )
            for key_id, key in sorted(policy.keys.items(), key=lambda item: item[1].created_at):
                state = "valid" if key.valid_at(now) else "expired"
                until = f" until {key.not_after.isoformat()}" if key.not_after else ""
                lines.append(f"  key {key_id}  created {key.created_at.isoformat()}  {state}{until}")
        return lines


def new_key(client_id: str, now: datetime | None = None) -> tuple[str, ClientKey]:
    """A fresh key for ``client_id``: ``(key id, key)``; the id says when it was made."""
    now = now or datetime.now(UTC)
    suffix = hashlib.sha256(os.urandom(16)).hexdigest()[:6]
    key_id = f"{client_id[:100]}-{now:%Y%m%d%H%M%S}-{suffix}"
    return key_id, ClientKey(secret=SecretStr(generate_secret()), created_at=now)


def describe_limits(limits: Limits) -> str:
    """``rpm 600, tokens/day 2000000, cost/month $500.00, in flight 20`` (or ``none``)."""
    parts = []
    if limits.requests_per_minute is not None:
        parts.append(f"rpm {limits.requests_per_minute}")
    if limits.tokens_per_day is not None:
        parts.append(f"tokens/day {limits.tokens_per_day}")
    if limits.cost_per_month_usd is not None:
        parts.append(f"cost/month ${limits.cost_per_month_usd:.2f}")
    if limits.max_in_flight is not None:
        parts.append(f"in flight {limits.max_in_flight}")
    return ", ".join(parts) or "none"


def describe_errors(error: ValidationError, limit: int = 5) -> str:
    """Field paths and reasons of a validation error, never the offending values."""
    parts = []
    for item in error.errors()[:limit]:
        location = ".".join(str(part) for part in item["loc"]) or "(root)"
        reason = item["msg"] if item["type"] != "value_error" else "invalid value"
        if item["type"] == "value_error" and "ctx" in item and isinstance(item["ctx"].get("error"), ValueError):
            reason = str(item["ctx"]["error"])  # our own messages, which never echo values
        parts.append(f"{location}: {reason}")
    more = len(error.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "invalid clients file: " + "; ".join(parts)


def fingerprint(content: bytes) -> str:
    """First 12 hex digits of SHA-256: identifies a file version in logs without revealing it."""
    return hashlib.sha256(content).hexdigest()[:12]


class ClientRegistry:
    """The current clients file, re-read when the file changes (no restart needed).

    Kubernetes updates a mounted Secret by swapping a symlink, so a change shows up as a new
    inode, size or modification time of the resolved path; the content's digest decides
    whether anything really changed. An invalid new version is refused and the last good
    one stays in force — loudly: :attr:`refused` says so until a good version arrives (ingest
    shows it on ``/readyz`` and as ``airlock_ingest_clients_file_refused``), since an edit
    that revokes a key and does not take leaves that key valid.

    Args:
        path: The clients file (``None``: not configured; :meth:`load` says so).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stat: tuple[int, int, int] | None = None
        self._digest: str | None = None
        self._rejected: str | None = None
        #: Why the newest version of the file was refused (``None`` while the newest is in force).
        self.refused: str | None = None
        self.current = ClientsFile()
        self.version = ""

    def _stat_of(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def load(self) -> ClientsFile:
        """Load the file now (start-up).

        Raises:
            ClientsFileError: The file is missing or invalid.
        """
        stat = self._stat_of()
        content = self._read()
        self._apply(content)
        self._stat = stat
        return self.current

    def refresh(self) -> bool:
        """Re-read the file if it changed.

        Returns:
            True when a new version was loaded.

        Raises:
            ClientsFileError: The changed file is invalid (reported once per bad version);
                the previous version stays in force.
        """
        stat = self._stat_of()
        if stat is None or stat == self._stat:
            return False
        content = self._read()
        self._stat = stat
        digest = fingerprint(content)
        if digest in (self._digest, self._rejected):
            return False
        try:
            self._apply(content)
        except ClientsFileError as error:
            self._rejected = digest
            self.refused = f"version {digest} refused ({error}); version {self.version} stays in force"
            raise
        self.refused = None
        return True

    def _read(self) -> bytes:
        if self.path is None:
            raise ClientsFileError("AIRLOCK_INGEST_CLIENTS_FILE must be set: ingest authenticates every request")
        try:
            return self.path.read_bytes()
        except OSError as error:
            raise ClientsFileError(f"cannot read clients file {self.path}: {error.strerror}") from None

    def _apply(self, content: bytes) -> None:
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise ClientsFileError("clients file is not UTF-8") from None
        self.current = ClientsFile.parse(text)
        self._digest = fingerprint(content)
        self.version = self._digest

    def summary(self) -> str:
        """``3 clients, 4 keys, 2 tenants (version 1a2b3c4d5e6f)``: safe to log."""
        keys = sum(len(policy.keys) for policy in self.current.clients.values())
        return (
            f"{len(self.current.clients)} clients, {keys} keys, {len(self.current.tenants)} tenants "
            f"(version {self.version})"
        )

    async def follow(self, interval_s: float) -> None:
        """Re-read the file every ``interval_s`` seconds while it changes; log each outcome."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                if self.refresh():
                    log.info("clients file reloaded: %s", self.summary())
            except ClientsFileError as error:
                log.error("clients file change refused, keeping version %s: %s", self.version, error)
