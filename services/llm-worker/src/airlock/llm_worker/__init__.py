"""Airlock llm-worker: the only service that talks to the model provider."""
