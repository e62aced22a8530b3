"""Airlock ingest: the gate every request passes first."""
