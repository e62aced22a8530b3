"""Python SDK for internal systems: publish requests to Airlock and await the replies."""

from airlock.client.sdk import AirlockClient, ReplyTimeout

__all__ = ["AirlockClient", "ReplyTimeout"]
