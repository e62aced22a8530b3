"""Redacting a request's texts under its policy, and scanning answers for PII the model introduced."""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

from airlock.core.settings import SettingsError
from airlock.redactor.chunking import merge
from airlock.redactor.detector import PiiDetector, model_digest
from airlock.redactor.placeholders import (
    REDACT,
    Detection,
    MaskedSpan,
    PlaceholderMap,
    mask,
    redaction_marker,
    values_of,
)
from airlock.redactor.policy import Action, Policy, PolicySet
from airlock.redactor.settings import RedactorSettings


@dataclass(frozen=True)
class RedactionResult:
    """What redaction made of one request.

    Attributes:
        policy: The policy applied.
        texts: Masked texts (the originals when ``blocked``).
        spans: Where placeholders went, per text.
        mapping: Placeholder → value map (what the vault seals).
        detections: What the detector found, per text (for ``--explain``).
        originals: The texts before masking.
        blocked: Entity types found that the policy blocks (empty: not blocked).
    """

    policy: Policy
    texts: list[str]
    spans: list[list[MaskedSpan]]
    mapping: PlaceholderMap
    detections: list[list[Detection]] = field(default_factory=list)
    originals: list[str] = field(default_factory=list)
    blocked: tuple[str, ...] = ()

    def entity_counts(self) -> dict[str, int]:
        """Occurrences replaced, by entity type (counts only: safe for audit and metrics)."""
        counts = Counter(span.entity_type for spans in self.spans for span in spans)
        return dict(sorted(counts.items()))

    def explain(self, index: int = 0) -> list[dict[str, object]]:
        """Each replaced span of text ``index`` with the recognizer and score behind it.

        A span the detector reported itself names its recognizer; another occurrence of a
        detected value names the recognizer of the first sighting and says so; a part of a
        detected person's name says that.
        """
        text_detections = self.detections[index] if self.detections else []
        by_span = {(d.start, d.end, d.entity_type): d for d in text_detections}
        by_value: dict[str, Detection] = {}
        for text_index, found in enumerate(self.detections):
            for detection in found:
                by_value.setdefault(self._value(text_index, detection), detection)
        entries: list[dict[str, object]] = []
        for span in self.spans[index]:
            exact = by_span.get((span.start, span.end, span.entity_type))
            entry: dict[str, object] = {
                "type": span.entity_type,
                "start": span.start,
                "end": span.end,
                "placeholder": span.placeholder,
                "action": span.action,
            }
            if exact is not None:
                entry.update(recognizer=exact.recognizer, score=exact.score)
            elif (first := by_value.get(self.originals[index][span.start : span.end])) is not None and (
                first.entity_type == span.entity_type
            ):
                entry.update(recognizer=f"{first.recognizer} (another occurrence)", score=first.score)
            else:
                entry.update(recognizer="part of a detected PERSON name", score=None)
            entries.append(entry)
        return entries

    def _value(self, index: int, detection: Detection) -> str:
        return self.originals[index][detection.start : detection.end]

    def blocked_counts(self) -> dict[str, int]:
        """Detections of blocked entity types, by type."""
        counts = Counter(d.entity_type for found in self.detections for d in found if d.entity_type in self.blocked)
        return dict(sorted(counts.items()))


@dataclass(frozen=True)
class OutputScan:
    """PII found in a restored answer that the caller did not send.

    Attributes:
        text: The answer to deliver (introduced values replaced when the policy says mask).
        entity_counts: Introduced values by entity type.
        action: ``flag`` or ``mask``, from the policy.
    """

    text: str
    entity_counts: dict[str, int]
    action: str

    @property
    def found(self) -> int:
        """Introduced values in all."""
        return sum(self.entity_counts.values())


class Redactor:
    """Applies redaction policies to the texts of requests.

    Args:
        detector: Finds entities; its failures propagate (the caller fails closed).
        policies: The policies in force.
    """

    def __init__(self, detector: PiiDetector, policies: PolicySet) -> None:
        self._detector = detector
        self._policies = policies
        for policy in policies.policies:
            detector.prepare(policy)  # an unsupported entity type fails at start-up

    @property
    def policies(self) -> PolicySet:
        """The policies in force."""
        return self._policies

    def policy_for(self, tenant: str, use_case: str) -> Policy:
        """The policy of a request."""
        return self._policies.select(tenant, use_case)

    def redact(self, texts: Sequence[str], policy: Policy | None = None) -> RedactionResult:
        """Detect and mask the entities of one request (the catch-all policy by default)."""
        return self.redact_many([(texts, policy or self._policies.select("*", "*"))])[0]

    def redact_many(self, requests: Sequence[tuple[Sequence[str], Policy]]) -> list[RedactionResult]:
        """Redact several requests with one pass of the NLP model over all their texts.

        Raises:
            Exception: Whatever detection raises; nothing is returned for any request then.
        """
        jobs = [(text, policy) for texts, policy in requests for text in texts]
        found = iter(self._detector.detect_many(jobs))
        results = []
        for texts, policy in requests:
            detections = [next(found) for _ in texts]
            results.append(self._apply(policy, list(texts), detections))
        return results

    def redact_in_steps(self, texts: Sequence[str], policy: Policy) -> Generator[int, None, RedactionResult]:
        """Redact one request a chunk at a time: each step analyzes one chunk and yields its size.

        For large requests: whoever drives the steps can let other work run between them
        (small requests are not held up behind one large one) and stop when a detection
        budget is spent. The result is the one :meth:`redact_many` gives.

        Raises:
            Exception: Whatever detection raises, at the step that raised it.
        """
        detections = []
        for text in texts:
            detections.append((yield from self._detect_in_steps(text, policy)))
        return self._apply(policy, list(texts), detections)

    def _detect_in_steps(self, text: str, policy: Policy) -> Generator[int, None, list[Detection]]:
        """Detect in ``text`` a chunk per step (each step yields the chunk's size)."""
        chunks = self._detector.chunks(text)
        found = []
        for chunk in chunks:
            # A chunk is at most the chunk size: analyzed whole, offsets relative to it.
            found.append(self._detector.detect_many([(chunk.text, policy)])[0])
            yield len(chunk.text)
        return merge(chunks, found)

    @staticmethod
    def _apply(policy: Policy, texts: list[str], detections: list[list[Detection]]) -> RedactionResult:
        found_types = {d.entity_type for found in detections for d in found}
        blocked = sorted(t for t in found_types if policy.action(t) is Action.BLOCK)
        if blocked:
            empty: list[list[MaskedSpan]] = [[] for _ in texts]
            return RedactionResult(policy, texts, empty, PlaceholderMap(), detections, texts, tuple(blocked))
        masked, spans, mapping = mask(texts, detections, person_name_parts=policy.name_parts)
        return RedactionResult(policy, masked, spans, mapping, detections, texts)

    def scan_output(self, text: str, policy: Policy, by_placeholder: dict[str, str]) -> OutputScan:
        """Find PII in a restored answer that is not one of the caller's own values.

        Args:
            text: The restored answer.
            policy: The request's policy (its entity types and ``output.introduced_pii``).
            by_placeholder: The request's map: its values are the caller's, not introduced.
        """
        return self.scan_outputs([(text, policy, by_placeholder)])[0]

    def scan_output_in_steps(
        self, text: str, policy: Policy, by_placeholder: dict[str, str]
    ) -> Generator[int, None, OutputScan]:
        """:meth:`scan_output` a chunk per step, for large answers (as :meth:`redact_in_steps`)."""
        found = yield from self._detect_in_steps(text, policy)
        return self._introduced(text, policy, by_placeholder, found)

    def scan_outputs(self, answers: Sequence[tuple[str, Policy, dict[str, str]]]) -> list[OutputScan]:
        """:meth:`scan_output` for several answers with one pass of the NLP model over all of them.

        Raises:
            Exception: Whatever detection raises; nothing is returned for any answer then.
        """
        found = self._detector.detect_many([(text, policy) for text, policy, _ in answers])
        return [
            self._introduced(text, policy, by_placeholder, detections)
            for (text, policy, by_placeholder), detections in zip(answers, found, strict=True)
        ]

    @staticmethod
    def _introduced(text: str, policy: Policy, by_placeholder: dict[str, str], found: list[Detection]) -> OutputScan:
        known = set(values_of(by_placeholder))
        introduced = [
            Detection(d.entity_type, d.start, d.end, d.score, d.recognizer, REDACT)
            for d in found
            if text[d.start : d.end] not in known and not any(text[d.start : d.end] in value for value in known)
        ]
        counts = dict(sorted(Counter(d.entity_type for d in introduced).items()))
        action = policy.output.introduced_pii
        if action == "mask" and introduced:
            masked, _, _ = mask([text], [introduced])
            return OutputScan(masked[0], counts, action)
        return OutputScan(text, counts, action)


def build_redactor(settings: RedactorSettings, policies: PolicySet | None = None) -> Redactor:
    """Load the detector (checking the model's digest when one is pinned) and the policies."""
    if settings.spacy_model_sha256:
        actual = model_digest(settings.spacy_model)
        if actual != settings.spacy_model_sha256:
            raise SettingsError(
                f"AIRLOCK_REDACTOR_SPACY_MODEL_SHA256: installed {settings.spacy_model} "
                f"has digest {actual}, not the pinned one"
            )
    policies = policies or PolicySet.load(settings.policy_dir)
    detector = PiiDetector(
        settings.spacy_model, chunk_chars=settings.chunk_chars, overlap_chars=settings.chunk_overlap_chars
    )
    return Redactor(detector, policies)


__all__ = ["OutputScan", "RedactionResult", "Redactor", "build_redactor", "redaction_marker"]
