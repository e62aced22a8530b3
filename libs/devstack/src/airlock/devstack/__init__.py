"""Airlock's local stack: a real Kafka broker, a fake OpenAI server, the services, the CLI."""
