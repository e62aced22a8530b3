"""Airlock auditor: seals the audit topic into a verifiable ledger."""
