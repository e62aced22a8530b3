"""Kafka principals and least-privilege ACLs, derived from the topology.

Every stage is its own principal (``airlock-<service>``), every client too
(``client-<client>``); an admin principal provisions topics, users and ACLs and is the only
super user. What each may do on the broker follows from :data:`airlock.core.topology.STAGES`:

- a stage reads its inputs (with its consumer group) and side channels, writes its outputs
  transactionally (its transactional ids start with ``airlock-<service>.``) and, if it
  answers callers, writes under ``<prefix>responses.``;
- a client writes the request topic and reads its own reply topic, nothing else;
- the audit reader (``airlock audit replay``, the scheduled replay) reads the evidence.

Nobody but the auditor writes the ledger or its checkpoints; nobody but the stages writes
the audit topic. The same bindings render as a table, as JSON or as Strimzi ``KafkaUser``
resources (``airlock ops acls``), and are applied by :func:`airlock.core.admin.apply_access`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from airlock.core.topics import Topics, topic_safe
from airlock.core.topology import STAGES, StageSpec

Resource = Literal["TOPIC", "GROUP", "TRANSACTIONAL_ID"]
Pattern = Literal["LITERAL", "PREFIXED"]
Operation = Literal["READ", "WRITE", "DESCRIBE"]

#: Reads ledger, checkpoints and the audit topic, for replay and export; writes nothing.
AUDIT_READER = "airlock-audit-reader"


def stage_principal(service: str) -> str:
    """The Kafka user of a stage (``airlock-ingest``)."""
    return f"airlock-{service}"


def client_principal(client_id: str) -> str:
    """The Kafka user of a client (``client-<client>``)."""
    return f"client-{topic_safe(client_id)}"


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW binding: ``principal`` may ``operation`` the resource, from any host.

    Attributes:
        principal: The user, without the ``User:`` prefix.
        resource: What kind of resource.
        name: Its name (or name prefix).
        pattern: Whether ``name`` is the whole name or a prefix.
        operation: What the principal may do.
    """

    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation


def _grant(
    principal: str, resource: Resource, name: str, operations: Iterable[Operation], *, prefixed: bool = False
) -> list[Acl]:
    pattern: Pattern = "PREFIXED" if prefixed else "LITERAL"
    return [Acl(principal, resource, name, pattern, op) for op in operations]


def stage_acls(spec: StageSpec, topics: Topics) -> list[Acl]:
    """What one stage may do: exactly what the topology says it reads and writes."""
    who = stage_principal(spec.service)
    acls: list[Acl] = []
    for base in (*spec.inputs, *spec.reads):
        acls += _grant(who, "TOPIC", getattr(topics, base), ("READ", "DESCRIBE"))
    for base in spec.writes:
        acls += _grant(who, "TOPIC", getattr(topics, base), ("WRITE", "DESCRIBE"))
    if spec.replies:
        acls += _grant(who, "TOPIC", topics.responses + ".", ("WRITE", "DESCRIBE"), prefixed=True)
    acls += _grant(who, "GROUP", spec.group_id, ("READ", "DESCRIBE"))
    acls += _grant(who, "TRANSACTIONAL_ID", spec.group_id + ".", ("WRITE", "DESCRIBE"), prefixed=True)
    return sorted(set(acls))  # a topic both read and written is described once


def client_acls(client_id: str, topics: Topics) -> list[Acl]:
    """What a client may do: write requests, read its own replies."""
    who = client_principal(client_id)
    return [
        *_grant(who, "TOPIC", topics.requests, ("WRITE", "DESCRIBE")),
        *_grant(who, "TOPIC", topics.reply_topic(client_id), ("READ", "DESCRIBE")),
    ]


def audit_reader_acls(topics: Topics) -> list[Acl]:
    """What the audit reader may do: read the evidence."""
    return [
        acl
        for topic in (topics.ledger, topics.checkpoints, topics.audit)
        for acl in _grant(AUDIT_READER, "TOPIC", topic, ("READ", "DESCRIBE"))
    ]


def deployment_acls(topics: Topics, clients: Sequence[str] = ()) -> list[Acl]:
    """Every binding of a deployment: the four stages, the audit reader and ``clients``."""
    acls = [acl for spec in STAGES for acl in stage_acls(spec, topics)]
    acls += audit_reader_acls(topics)
    for client_id in clients:
        acls += client_acls(client_id, topics)
    return sorted(set(acls))


def principals(clients: Sequence[str] = ()) -> list[str]:
    """Every principal a deployment needs, the admin aside."""
    return [*(stage_principal(s.service) for s in STAGES), AUDIT_READER, *(client_principal(c) for c in clients)]


def as_table(acls: Sequence[Acl]) -> str:
    """The bindings as an aligned text table, one per line."""
    rows = [("principal", "resource", "pattern", "name", "operation")]
    rows += [(a.principal, a.resource, a.pattern, a.name, a.operation) for a in acls]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def as_json(acls: Sequence[Acl]) -> list[dict[str, Any]]:
    """The bindings as plain dictionaries."""
    return [asdict(acl) for acl in acls]


_STRIMZI_OPERATION = {"READ": "Read", "WRITE": "Write", "DESCRIBE": "Describe"}
_STRIMZI_RESOURCE = {"TOPIC": "topic", "GROUP": "group", "TRANSACTIONAL_ID": "transactionalId"}


def strimzi_users(acls: Sequence[Acl], cluster: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """One Strimzi ``KafkaUser`` (SCRAM-SHA-512, simple authorization) per principal."""
    by_principal: dict[str, dict[tuple[str, str, str], list[str]]] = {}
    for acl in acls:
        resources = by_principal.setdefault(acl.principal, {})
        resources.setdefault((acl.resource, acl.name, acl.pattern), []).append(_STRIMZI_OPERATION[acl.operation])
    users = []
    for principal, resources in sorted(by_principal.items()):
        metadata: dict[str, Any] = {"name": principal, "labels": {"strimzi.io/cluster": cluster}}
        if namespace:
            metadata["namespace"] = namespace
        users.append(
            {
                "apiVersion": "kafka.strimzi.io/v1beta2",
                "kind": "KafkaUser",
                "metadata": metadata,
                "spec": {
                    "authentication": {"type": "scram-sha-512"},
                    "authorization": {
                        "type": "simple",
                        "acls": [
                            {
                                "resource": {
                                    "type": _STRIMZI_RESOURCE[kind],
                                    "name": name,
                                    "patternType": pattern.lower(),
                                },
                                "operations": sorted(operations),
                            }
                            for (kind, name, pattern), operations in sorted(resources.items())
                        ],
                    },
                },
            }
        )
    return users
