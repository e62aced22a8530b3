"""Topic names and their provisioning specs.

One place names every topic; services, the CLI, the chart's provisioning job and the tests
all go through :class:`Topics`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from airlock.core.settings import TopicSettings

_TOPIC_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def topic_safe(identifier: str) -> str:
    """``identifier`` as a topic-name (and principal-name) component, collision-free.

    Identifiers made of Kafka's topic characters are kept as they are; any other one (client
    ids may hold ``:@/``) is spelled with those characters replaced and a digest of the
    original appended, so two ids never share a reply topic or a principal.
    """
    if _TOPIC_SAFE.match(identifier):
        return identifier
    digest = hashlib.sha256(identifier.encode()).hexdigest()[:12]
    return re.sub(r"[^A-Za-z0-9._-]", "_", identifier)[:80] + "-" + digest


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: name, partitions and topic-level configs."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Topics:
    """Every topic Airlock uses, under one prefix (default ``airlock.``).

    Attributes:
        prefix: Prepended to each base name; tests use a unique prefix per run.
    """

    prefix: str = "airlock."

    def name(self, base: str) -> str:
        """Full name of a topic from its base name."""
        return f"{self.prefix}{base}"

    @property
    def requests(self) -> str:
        """Callers publish :class:`~airlock.core.models.LLMRequest` here."""
        return self.name("requests")

    @property
    def accepted(self) -> str:
        """Ingest → redactor; holds raw prompts (only the redactor reads it)."""
        return self.name("accepted")

    @property
    def redacted(self) -> str:
        """Redactor → llm-worker; prompts masked, placeholder map sealed."""
        return self.name("redacted")

    @property
    def completions(self) -> str:
        """llm-worker → redactor; the answer, still masked."""
        return self.name("completions")

    @property
    def responses(self) -> str:
        """The root of every reply topic (``responses.<client>``); no topic of its own.

        Replies carry restored answers, so each client reads its own topic only: there is no
        shared reply topic.
        """
        return self.name("responses")

    def reply_topic(self, client_id: str) -> str:
        """The reply topic of ``client_id`` (``<prefix>responses.<client>``), readable only by it."""
        return f"{self.responses}.{topic_safe(client_id)}"

    def reply_spec(self, client_id: str, settings: TopicSettings) -> TopicSpec:
        """The provisioning spec of a client's reply topic."""
        return TopicSpec(
            self.reply_topic(client_id),
            settings.partitions,
            settings.replication_factor,
            {"retention.ms": str(settings.transit_retention_ms)},
        )

    @property
    def audit(self) -> str:
        """One audit event per transition, from every stage."""
        return self.name("audit")

    @property
    def ledger(self) -> str:
        """The auditor's hash-chained, sealed copy of the audit topic."""
        return self.name("ledger")

    @property
    def checkpoints(self) -> str:
        """Signed checkpoints of the ledger."""
        return self.name("ledger.checkpoints")

    @property
    def usage(self) -> str:
        """Metered usage per request (:class:`~airlock.core.models.UsageRecord`), keyed by tenant."""
        return self.name("usage")

    @property
    def llm_cache(self) -> str:
        """The llm-worker's response cache (compacted; redacted prompts' answers, per tenant)."""
        return self.name("llm.cache")

    @property
    def llm_pacing(self) -> str:
        """Rate-limit signals shared by every llm-worker replica (a provider's 429 pauses the fleet)."""
        return self.name("llm.pacing")

    @property
    def ingest_seen(self) -> str:
        """Ingest's memory of signed records and accepted request ids, one partition per request partition."""
        return self.name("ingest.seen")

    @property
    def ingest_admissions(self) -> str:
        """Ingest's rate-limit admission log: one partition, so every replica decides alike."""
        return self.name("ingest.admissions")

    @property
    def dlq(self) -> str:
        """Records a stage could not process: the reason in clear headers, the original sealed."""
        return self.name("dlq")

    def is_reply_topic(self, topic: str) -> bool:
        """Tell whether ``topic`` has a reply topic's name (``<prefix>responses.<name>``)."""
        return topic.startswith(self.responses + ".") and len(topic) > len(self.responses) + 1

    def specs(self, settings: TopicSettings) -> list[TopicSpec]:
        """The topics to provision, with partitions and retention from ``settings``.

        The ledger and its checkpoints keep their records forever by default (they are the
        evidence); the audit topic keeps them as long, so the ledger can always be rebuilt
        and cross-checked against its source. Transit topics hold prompts and answers, so
        they keep them only as long as a stage might need to catch up.
        """
        transit = {"retention.ms": str(settings.transit_retention_ms)}
        evidence = {"retention.ms": str(settings.ledger_retention_ms), "cleanup.policy": "delete"}
        partitions, replication = settings.partitions, settings.replication_factor

        def spec(name: str, configs: dict[str, str], count: int = partitions) -> TopicSpec:
            return TopicSpec(name, count, replication, configs)

        return [
            spec(self.requests, transit),
            spec(self.accepted, transit),
            spec(self.redacted, transit),
            spec(self.completions, transit),
            spec(self.dlq, {"retention.ms": str(settings.dlq_retention_ms)}),
            # Usage must outlive the longest budget window (a calendar month).
            spec(self.usage, {"retention.ms": str(settings.usage_retention_ms)}),
            # Latest answer per cache key; entries expire by their own TTL, the topic by retention.
            spec(
                self.llm_cache,
                {"cleanup.policy": "compact,delete", "retention.ms": str(settings.llm_cache_retention_ms)},
            ),
            # Pacing signals matter for seconds; one partition keeps them in order for every reader.
            spec(self.llm_pacing, {"retention.ms": str(3600 * 1000)}, count=1),
            # Written by ingest partition p to partition p (same count as requests): replays and
            # duplicate request ids are remembered as long as the idempotency window needs.
            spec(self.ingest_seen, {"retention.ms": str(settings.ingest_seen_retention_ms)}),
            # Intents and settlements: the broker stamps them (LogAppendTime), so every replica
            # buckets them alike, and they outlive the longest budget window, as usage does.
            spec(
                self.ingest_admissions,
                {"retention.ms": str(settings.usage_retention_ms), "message.timestamp.type": "LogAppendTime"},
                count=1,
            ),
            # The ledger mirrors the audit topic partition for partition.
            spec(self.audit, evidence),
            spec(self.ledger, evidence),
            spec(self.checkpoints, evidence, count=1),
        ]
