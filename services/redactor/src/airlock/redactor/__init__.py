"""Airlock redactor: the only service that sees raw PII."""
