"""Evaluation of PII redaction: a generated labeled set, the redactors under test, the scores.

``make eval`` (``python -m airlock.devstack.eval``) prints leakage and utility per entity type
for Airlock's redactor and for plain Presidio with its defaults, on the same set and model.
"""
