"""Python SDK for internal systems: sign and publish requests to Airlock, await the replies."""

from airlock.client.credentials import ClientCredentials, CredentialsError
from airlock.client.sdk import AirlockClient, ReplyTimeout

__all__ = ["AirlockClient", "ClientCredentials", "CredentialsError", "ReplyTimeout"]
