"""A client's signing credentials: from arguments, a mounted file, or the environment.

The environment (a Kubernetes Secret, in production) is read by :meth:`ClientCredentials.from_env`:

* ``AIRLOCK_CLIENT_CREDENTIALS_FILE``: a JSON or YAML file ``{client_id, key_id, secret}``; or
* ``AIRLOCK_CLIENT_ID``, ``AIRLOCK_CLIENT_KEY_ID`` and ``AIRLOCK_CLIENT_SECRET``.

The secret is a :class:`~pydantic.SecretStr`: it never shows in a repr, a log or an error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from airlock.core.models import Identifier
from airlock.core.signing import decode_secret, signing_headers


class CredentialsError(ValueError):
    """Credentials are missing or invalid; the message never contains the secret."""


class ClientCredentials(BaseModel):
    """Who signs, with which key.

    Attributes:
        client_id: The client's id in Airlock's clients file.
        key_id: Which of the client's keys this is.
        secret: Standard base64 of the key's 32 bytes.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    client_id: Identifier
    key_id: Identifier
    secret: SecretStr

    def material(self) -> bytes:
        """The HMAC key bytes.

        Raises:
            CredentialsError: The secret is not base64 of 32 bytes.
        """
        try:
            return decode_secret(self.secret.get_secret_value())
        except ValueError as error:
            raise CredentialsError(f"credentials of {self.client_id!r}: {error}") from None

    def headers(self, *, request_id: str, timestamp: int, body: bytes) -> list[tuple[str, bytes]]:
        """The signing headers for one record (request id included)."""
        return signing_headers(
            self.material(),
            client_id=self.client_id,
            key_id=self.key_id,
            timestamp=timestamp,
            request_id=request_id,
            body=body,
        )

    @classmethod
    def from_file(cls, path: Path) -> ClientCredentials:
        """Read ``{client_id, key_id, secret}`` from a JSON or YAML file.

        Raises:
            CredentialsError: Unreadable or invalid (fields named, values never shown).
        """
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise CredentialsError(f"cannot read credentials file {path}: {error.strerror}") from None
        except (yaml.YAMLError, UnicodeDecodeError):
            raise CredentialsError(f"credentials file {path} is not JSON or YAML") from None
        return cls._validated(document, f"credentials file {path}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ClientCredentials | None:
        """Credentials from the environment, or ``None`` when none are configured.

        Raises:
            CredentialsError: Configured but incomplete or invalid.
        """
        env = os.environ if environ is None else environ
        path = env.get("AIRLOCK_CLIENT_CREDENTIALS_FILE")
        if path:
            return cls.from_file(Path(path))
        names = ("AIRLOCK_CLIENT_ID", "AIRLOCK_CLIENT_KEY_ID", "AIRLOCK_CLIENT_SECRET")
        present = [name for name in names if env.get(name)]
        if not present:
            return None
        if len(present) < len(names):
            missing = ", ".join(name for name in names if name not in present)
            raise CredentialsError(f"incomplete client credentials in the environment: {missing} not set")
        document = {
            "client_id": env["AIRLOCK_CLIENT_ID"],
            "key_id": env["AIRLOCK_CLIENT_KEY_ID"],
            "secret": env["AIRLOCK_CLIENT_SECRET"],
        }
        return cls._validated(document, "AIRLOCK_CLIENT_* variables")

    @classmethod
    def _validated(cls, document: object, source: str) -> ClientCredentials:
        try:
            credentials = cls.model_validate(document)
        except ValidationError as error:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) or "(root)" for e in error.errors())
            raise CredentialsError(f"{source}: invalid or missing {fields}") from None
        credentials.material()
        return credentials

    def to_json(self) -> str:
        """The JSON form, secret included: write it only to a secret store."""
        return json.dumps(
            {"client_id": self.client_id, "key_id": self.key_id, "secret": self.secret.get_secret_value()}
        )
