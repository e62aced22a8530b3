"""Which service reads and writes which topics: the mesh's topology, declared once.

The local mesh starts services from it, and :mod:`airlock.core.access` derives every Kafka
principal's ACLs from it, so what a stage may touch on the broker is exactly what it is
written here to touch. Topics are named by their :class:`~airlock.core.topics.Topics`
attribute (``"accepted"``, ``"ingest_seen"``), so one table serves every topic prefix.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    """One service of the mesh.

    Attributes:
        service: Its name (``ingest``); also its consumer group ``airlock-<service>``, the
            prefix of its transactional ids and its Kafka principal.
        module: The FastStream app (``faststream run <module>``).
        inputs: Topics its consumer group reads (its transactional inputs).
        reads: Further topics it reads outside the group (side channels, tails, feeds).
        writes: Topics it writes.
        replies: Whether it writes replies to callers' reply topics.
    """

    service: str
    module: str
    inputs: tuple[str, ...]
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    replies: bool = False

    @property
    def group_id(self) -> str:
        """Its consumer group (and the prefix of its transactional ids)."""
        return f"airlock-{self.service}"


#: Every stage writes audit events and dead letters.
_EVERY_STAGE_WRITES = ("audit", "dlq")

STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        "ingest",
        "airlock.ingest.app:app",
        inputs=("requests",),
        reads=("ingest_seen", "usage", "ingest_admissions"),
        # ``requests`` too: a record published to a partition other than its home is moved there.
        writes=("requests", "accepted", "ingest_seen", "ingest_admissions", *_EVERY_STAGE_WRITES),
        replies=True,
    ),
    StageSpec(
        "redactor",
        "airlock.redactor.app:app",
        inputs=("accepted", "completions"),
        writes=("redacted", *_EVERY_STAGE_WRITES),
        replies=True,
    ),
    StageSpec(
        "llm-worker",
        "airlock.llm_worker.app:app",
        inputs=("redacted",),
        reads=("llm_cache", "llm_pacing"),
        # ``ingest_admissions``: each request's settlement, which releases ingest's reservation.
        writes=("completions", "usage", "ingest_admissions", "llm_cache", "llm_pacing", *_EVERY_STAGE_WRITES),
        replies=True,
    ),
    StageSpec(
        "auditor",
        "airlock.auditor.app:app",
        inputs=("audit",),
        reads=("ledger", "checkpoints"),
        # The auditor alone writes the evidence; it also ticks its own audit partitions.
        writes=("ledger", "checkpoints", *_EVERY_STAGE_WRITES),
    ),
)


def stage(service: str) -> StageSpec:
    """The spec of ``service``.

    Raises:
        KeyError: No such service.
    """
    for spec in STAGES:
        if spec.service == service:
            return spec
    raise KeyError(f"unknown service {service!r}: expected one of {', '.join(s.service for s in STAGES)}")


#: The stages that write replies to callers' reply topics (clients accept replies from these).
REPLYING_STAGES: frozenset[str] = frozenset(spec.service for spec in STAGES if spec.replies)

#: ``service → FastStream app`` of every stage, in pipeline order.
SERVICE_MODULES: dict[str, str] = {spec.service: spec.module for spec in STAGES}
