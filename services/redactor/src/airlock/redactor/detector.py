"""The PII detector: Presidio's recognizers over one local spaCy model, with no network access.

Speed comes from doing less, not from doing it less well:

* one spaCy pipeline per process, trimmed to what named-entity recognition needs (the tagger,
  parser, attribute ruler and lemmatizer do not feed the NER of the ``en_core_web_*`` models;
  Presidio's context words are matched against lower-cased tokens instead of lemmas);
* ``nlp.pipe`` over every text of a micro-batch at once;
* per policy, only the recognizers for the entity types it looks for (a policy that needs no
  NER type skips the model and only tokenizes);
* long texts in overlapping chunks (:mod:`.chunking`).

Presidio's email recognizer validates domains with ``tldextract``, which by default downloads
the public-suffix list; here every use of ``tldextract`` reads the snapshot bundled with it.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from presidio_analyzer import AnalyzerEngine, RecognizerRegistry, RecognizerResult
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine

from airlock.redactor.chunking import merge, split
from airlock.redactor.placeholders import Detection
from airlock.redactor.policy import Action, Policy
from airlock.redactor.recognizers import NER_TYPES, make_tldextract_offline, recognizers_for

log = logging.getLogger(__name__)

#: spaCy labels that never name a person or place: numbers, amounts, works, laws, events.
IGNORED_NER_LABELS = [
    "CARDINAL",
    "ORDINAL",
    "QUANTITY",
    "MONEY",
    "PERCENT",
    "WORK_OF_ART",
    "LAW",
    "LANGUAGE",
    "EVENT",
    "PRODUCT",
]


class ModelNotInstalled(RuntimeError):
    """The configured spaCy model is not installed (and will not be downloaded)."""


def model_digest(model_name: str) -> str:
    """SHA-256 over the installed model's files, in path order (to pin a model build)."""
    import spacy.util

    path = spacy.util.get_package_path(model_name)
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


class NerOnlySpacyEngine(SpacyNlpEngine):  # type: ignore[misc]
    """Presidio's spaCy engine running only the NER component (and what it listens to).

    Args:
        model_name: Installed spaCy pipeline; never downloaded.
    """

    def __init__(self, model_name: str) -> None:
        super().__init__(
            models=[{"lang_code": "en", "model_name": model_name}],
            ner_model_configuration=NerModelConfiguration(labels_to_ignore=IGNORED_NER_LABELS),
        )
        self.model_name = model_name

    def load(self) -> None:
        """Load the model and disable every component NER does not need."""
        import spacy
        import spacy.util

        if not spacy.util.is_package(self.model_name) and not Path(self.model_name).exists():
            raise ModelNotInstalled(
                f"spaCy model {self.model_name!r} is not installed; install its wheel "
                "(AIRLOCK_REDACTOR_SPACY_MODEL names it)"
            )
        nlp = spacy.load(self.model_name)
        needed = {"ner"}
        for name, component in nlp.pipeline:
            if "ner" in getattr(component, "listening_components", ()):
                needed.add(name)  # a shared tok2vec/transformer the NER listens to
        for name in list(nlp.pipe_names):
            if name not in needed:
                nlp.disable_pipe(name)
        log.info("spaCy %s: running %s", self.model_name, nlp.pipe_names)
        self.nlp = {"en": nlp}  # type: ignore[assignment]

    @property
    def pipeline(self) -> Any:
        """The trimmed spaCy ``Language``."""
        assert self.nlp is not None, "load() first"
        return self.nlp["en"]

    def artifacts(self, doc: Any) -> NlpArtifacts:
        """Presidio's view of a processed document."""
        return self._doc_to_nlp_artifact(doc, "en")

    def _doc_to_nlp_artifact(self, doc: Any, language: str) -> NlpArtifacts:
        entities, scores = self._get_updated_entities(self._get_entities(doc), self._get_scores_for_entities(doc))
        strings = doc.vocab.strings
        return NlpArtifacts(
            entities=entities,
            tokens=doc,
            tokens_indices=doc.to_array("IDX").tolist(),
            # Without the lemmatizer, context words match lower-cased tokens; Presidio's
            # enhancer matches a context word inside a token, so "phones" still finds "phone".
            lemmas=[strings[key] for key in doc.to_array("LOWER").tolist()],
            nlp_engine=self,
            language=language,
            scores=scores,
        )


class TokenIndexedContextEnhancer(LemmaContextAwareEnhancer):  # type: ignore[misc]
    """Presidio's context enhancer, finding a match's token by bisection instead of a scan.

    Presidio walks the token list from the start for every result, which makes context
    enhancement quadratic in a long prompt; token offsets are sorted, so bisection finds
    the same token.
    """

    @staticmethod
    def _find_index_of_match_token(word: str, start: int, tokens: Any, tokens_indices: list[int]) -> int:
        index = max(0, bisect.bisect_right(tokens_indices, start) - 1)
        if start >= tokens_indices[index] + len(tokens[index]):
            index += 1  # ``start`` is in the whitespace after that token
        if index >= len(tokens_indices):
            raise ValueError(f"no token at offset {start}")
        return index


@dataclass
class _PolicyAnalyzer:
    policy: Policy
    analyzer: AnalyzerEngine
    entities: list[str]
    floor: float
    needs_ner: bool


class PiiDetector:
    """Finds the entities a policy asks for, in batches of texts.

    Args:
        model_name: Installed spaCy pipeline.
        chunk_chars: Texts longer than this are analyzed in overlapping chunks.
        overlap_chars: Overlap between chunks (longer than any entity worth finding).
        batch_size: spaCy ``pipe`` batch size.
    """

    def __init__(self, model_name: str, *, chunk_chars: int = 10_000, overlap_chars: int = 400, batch_size: int = 64):
        make_tldextract_offline()
        self._nlp_engine = NerOnlySpacyEngine(model_name)
        self._nlp_engine.load()
        self._analyzers: dict[tuple[str, str], _PolicyAnalyzer] = {}
        self._chunk_chars = chunk_chars
        self._overlap_chars = overlap_chars
        self._batch_size = batch_size
        split("", chunk_chars, overlap_chars)  # validates the sizes now, not on the first request

    @property
    def model_name(self) -> str:
        """The spaCy model in use."""
        return self._nlp_engine.model_name

    def prepare(self, policy: Policy) -> None:
        """Build (once) the analyzer of ``policy``; raises if it asks for an unknown entity type."""
        self._for(policy)

    def _for(self, policy: Policy) -> _PolicyAnalyzer:
        key = (policy.label, policy.digest)
        found = self._analyzers.get(key)
        if found is None:
            recognizers = recognizers_for(policy)
            registry = RecognizerRegistry(recognizers=recognizers, supported_languages=["en"])
            analyzer = AnalyzerEngine(
                registry=registry,
                nlp_engine=self._nlp_engine,
                supported_languages=["en"],
                context_aware_enhancer=TokenIndexedContextEnhancer(),
            )
            entities = list(policy.detected)
            floor = min((policy.threshold(e) for e in entities), default=1.0)
            found = _PolicyAnalyzer(policy, analyzer, entities, floor, bool(set(NER_TYPES) & set(entities)))
            self._analyzers[key] = found
        return found

    def detect(self, text: str, policy: Policy) -> list[Detection]:
        """Entities of ``policy``'s types in ``text``; raises whatever the analyzer raises."""
        return self.detect_many([(text, policy)])[0]

    def detect_many(self, jobs: Sequence[tuple[str, Policy]]) -> list[list[Detection]]:
        """Entities in each ``(text, policy)`` job, running spaCy once over all of them.

        Raises:
            Exception: Whatever the analyzer raises (the caller fails closed).
        """
        prepared = [self._for(policy) for _, policy in jobs]
        chunked = [split(text, self._chunk_chars, self._overlap_chars) if text.strip() else [] for text, _ in jobs]
        flat = [(index, chunk) for index, chunks in enumerate(chunked) for chunk in chunks]
        nlp = self._nlp_engine.pipeline
        with_ner = [chunk.text for index, chunk in flat if prepared[index].needs_ner]
        docs = iter(nlp.pipe(with_ner, batch_size=self._batch_size))
        found: list[list[list[Detection]]] = [[] for _ in jobs]
        for index, chunk in flat:
            job = prepared[index]
            doc = next(docs) if job.needs_ner else nlp.make_doc(chunk.text)
            found[index].append(self._analyze(job, chunk.text, doc))
        return [merge(chunks, per_chunk) for chunks, per_chunk in zip(chunked, found, strict=True)]

    def _analyze(self, job: _PolicyAnalyzer, text: str, doc: Any) -> list[Detection]:
        policy = job.policy
        results: list[RecognizerResult] = job.analyzer.analyze(
            text=text,
            language="en",
            entities=job.entities,
            score_threshold=job.floor,
            allow_list=policy.allow_list or None,
            nlp_artifacts=self._nlp_engine.artifacts(doc),
        )
        return [
            Detection(
                entity_type=r.entity_type,
                start=r.start,
                end=r.end,
                score=round(float(r.score), 4),
                recognizer=(r.recognition_metadata or {}).get("recognizer_name", ""),
                action="redact" if policy.action(r.entity_type) is Action.REDACT else "mask",
            )
            for r in results
            if r.score >= policy.threshold(r.entity_type) and policy.action(r.entity_type) is not Action.ALLOW
        ]
