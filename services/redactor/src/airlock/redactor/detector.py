"""The PII detector: Presidio's recognizers over one local spaCy model, with no network access.

Speed comes from doing less, not from doing it less well:

* one spaCy pipeline per process, trimmed to what named-entity recognition needs (the tagger,
  parser, attribute ruler and lemmatizer do not feed the NER of the ``en_core_web_*`` models;
  Presidio's context words are matched against lower-cased tokens instead of lemmas);
* ``nlp.pipe`` over every text of a micro-batch at once;
* per policy, only the recognizers for the entity types it looks for (a policy that needs no
  NER type skips the model and only tokenizes), each skipped on a text without the
  characters it needs (no digit, no ``@``);
* the recognizers are called directly on one shared ``NlpArtifacts`` rather than through
  ``AnalyzerEngine.analyze`` (whose per-call bookkeeping — registry filtering, a deep copy of
  every result for context enhancement — cost more than most recognizers on a short prompt);
  the steps it would apply are applied here, in the same order: context enhancement (only
  for results of recognizers that have context words), per-type thresholds, duplicate
  removal, the allow list;
* long texts in overlapping chunks (:mod:`.chunking`).

Presidio's email recognizer validates domains with ``tldextract``, which by default downloads
the public-suffix list; here every use of ``tldextract`` reads the snapshot bundled with it.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine

from airlock.redactor.chunking import Chunk, merge, split, tokenizable
from airlock.redactor.people import refine_persons
from airlock.redactor.placeholders import Detection
from airlock.redactor.policy import Action, Policy
from airlock.redactor.recognizers import (
    NER_TYPES,
    WindowedPhoneRecognizer,
    gate_of,
    make_tldextract_offline,
    recognizers_for,
)

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
        from thinc.api import use_ops

        # numpy's BLAS (OpenBLAS) multiplies the NER's matrices in about two thirds of the CPU
        # time of thinc's default (blis) on the machines we measured, with the same entities.
        with use_ops("numpy", use_blis=False):
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
        return LazyArtifacts(doc, entities, scores, self, language)


class LazyArtifacts(NlpArtifacts):  # type: ignore[misc]
    """Presidio's ``NlpArtifacts`` whose token views are built on first use.

    Only context enhancement reads the token offsets, lower-cased tokens and keywords, and
    most texts have no result that needs it; Presidio builds them for every text (its keyword
    list, searched linearly for every context word, also becomes a set here).
    Without the lemmatizer, context words match lower-cased tokens; Presidio's enhancer
    matches a context word inside a token, so "phones" still finds "phone".
    """

    def __init__(self, doc: Any, entities: list[Any], scores: list[float], engine: Any, language: str) -> None:
        # Not calling NlpArtifacts.__init__: it computes every view eagerly.
        self.entities = entities
        self.tokens = doc
        self.nlp_engine = engine
        self.language = language
        self.scores = scores if scores else [0.85] * len(entities)
        self._indices: list[int] | None = None
        self._lemmas: list[str] | None = None
        self._keywords: frozenset[str] | None = None

    @property
    def tokens_indices(self) -> list[int]:
        """Character offset of each token."""
        if self._indices is None:
            self._indices = self.tokens.to_array("IDX").tolist()
        return self._indices

    @tokens_indices.setter
    def tokens_indices(self, value: list[int]) -> None:
        self._indices = value

    @property
    def lemmas(self) -> list[str]:
        """Each token, lower-cased (standing in for its lemma)."""
        if self._lemmas is None:
            strings = self.tokens.vocab.strings
            self._lemmas = [strings[key] for key in self.tokens.to_array("LOWER").tolist()]
        return self._lemmas

    @lemmas.setter
    def lemmas(self, value: list[str]) -> None:
        self._lemmas = value

    # A set where Presidio has a list: its enhancer only tests membership.
    @property  # type: ignore[override]
    def keywords(self) -> frozenset[str]:
        """Presidio's keywords (tokens that are not stop words or punctuation, split at ``:``), as a set."""
        if self._keywords is None:
            self._keywords = frozenset(
                part
                for token, lowered in zip(self.tokens, self.lemmas, strict=True)
                if not token.is_stop and not token.is_punct and lowered not in ("-pron-", "be")
                for part in lowered.split(":")
            )
        return self._keywords

    @keywords.setter
    def keywords(self, value: Iterable[str]) -> None:
        self._keywords = frozenset(value)


class TokenIndexedContextEnhancer(LemmaContextAwareEnhancer):  # type: ignore[misc]
    """Presidio's context enhancer, in place and finding a match's token by bisection.

    Presidio deep-copies every result before raising scores (the detector owns its results,
    so they are changed in place here), and walks the token list from the start for every
    result, which makes context enhancement quadratic in a long prompt; token offsets are
    sorted, so bisection finds the same token. The rule is Presidio's: a context word of
    the result's recognizer within the five words before it adds 0.35 to the score (at least
    0.4, at most 1).
    """

    def enhance_using_context(
        self,
        text: str,
        raw_results: list[RecognizerResult],
        nlp_artifacts: NlpArtifacts,
        recognizers: list[EntityRecognizer],
        context: list[str] | None = None,
    ) -> list[RecognizerResult]:
        """Raise, in place, the score of each result with a context word of its recognizer nearby."""
        by_id = {recognizer.id: recognizer for recognizer in recognizers}
        extra = [word.lower() for word in context or ()]
        for result in raw_results:
            metadata = result.recognition_metadata or {}
            recognizer = by_id.get(metadata.get(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY))
            if recognizer is None or not recognizer.context:
                continue
            if metadata.get(RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY):
                continue  # already raised by its recognizer
            words = self._extract_surrounding_words(
                nlp_artifacts=nlp_artifacts, word=text[result.start : result.end], start=result.start
            )
            supportive = self._find_supportive_word_in_context([*words, *extra], recognizer.context)
            if supportive:
                result.score = min(
                    max(result.score + self.context_similarity_factor, self.min_score_with_context_similarity),
                    self.MAX_SCORE,
                )
                if result.analysis_explanation is not None:
                    result.analysis_explanation.set_supportive_context_word(supportive)
                    result.analysis_explanation.set_improved_score(result.score)
        return raw_results

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
    recognizers: list[EntityRecognizer]
    #: Per recognizer: a pattern a text must contain for it to find anything (``None``: always run).
    gates: list[Any]
    entities: list[str]
    needs_ner: bool
    allow_list: frozenset[str]
    #: Ids of the recognizers that have context words (the only ones context can raise).
    with_context: frozenset[str]


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
        self._enhancer = TokenIndexedContextEnhancer()
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
            for recognizer in recognizers:
                if not recognizer.is_loaded:
                    recognizer.load()
                    recognizer.is_loaded = True
            # The phone recognizer runs last: it skips digits another recognizer already found.
            recognizers.sort(key=lambda r: isinstance(r, WindowedPhoneRecognizer))
            entities = list(policy.detected)
            found = _PolicyAnalyzer(
                policy=policy,
                recognizers=recognizers,
                gates=[gate_of(r) for r in recognizers],
                entities=entities,
                needs_ner=bool(set(NER_TYPES) & set(entities)),
                allow_list=frozenset(policy.allow_list),
                with_context=frozenset(r.id for r in recognizers if r.context),
            )
            self._analyzers[key] = found
        return found

    def chunks(self, text: str) -> list[Chunk]:
        """The overlapping chunks ``text`` is analyzed in (one for a short text)."""
        return split(text, self._chunk_chars, self._overlap_chars)

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
        with_ner = [tokenizable(chunk.text) for index, chunk in flat if prepared[index].needs_ner]
        docs = iter(nlp.pipe(with_ner, batch_size=self._batch_size))
        found: list[list[list[Detection]]] = [[] for _ in jobs]
        for index, chunk in flat:
            job = prepared[index]
            doc = next(docs) if job.needs_ner else nlp.make_doc(tokenizable(chunk.text))
            found[index].append(self._analyze(job, chunk.text, doc))
        return [merge(chunks, per_chunk) for chunks, per_chunk in zip(chunked, found, strict=True)]

    def _analyze(self, job: _PolicyAnalyzer, text: str, doc: Any) -> list[Detection]:
        policy = job.policy
        results = self.recognize(job, text, doc)
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
            if policy.action(r.entity_type) is not Action.ALLOW
        ]

    def recognize(self, job: _PolicyAnalyzer, text: str, doc: Any) -> list[RecognizerResult]:
        """What ``AnalyzerEngine.analyze`` would return for ``job``'s recognizers, without its overhead.

        Context enhancement, thresholds, duplicate removal and the allow list are applied in
        Presidio's order; :func:`refine_persons` then drops "people" that are organizations.
        The ``phonenumbers`` recognizer runs last and skips digits that a detection which
        will be kept already covers (it could only add a second label to them).
        """
        artifacts = self._nlp_engine.artifacts(doc)
        policy = job.policy
        results: list[RecognizerResult] = []
        phones: list[WindowedPhoneRecognizer] = []
        for recognizer, gate in zip(job.recognizers, job.gates, strict=True):
            if gate is not None and gate.search(text) is None:
                continue
            if isinstance(recognizer, WindowedPhoneRecognizer):
                phones.append(recognizer)
                continue
            results.extend(_tagged(recognizer, recognizer.analyze(text, job.entities, artifacts)))
        self._enhance(job, text, results, artifacts)
        for phone in phones:
            claimed = [(r.start, r.end) for r in results if r.score >= policy.threshold(r.entity_type)]
            found = _tagged(phone, phone.analyze_unclaimed(text, job.entities, claimed))
            self._enhance(job, text, found, artifacts)
            results.extend(found)
        results = [r for r in results if r.score >= policy.threshold(r.entity_type)]
        results = refine_persons(text, EntityRecognizer.remove_duplicates(results), artifacts)
        return [r for r in results if text[r.start : r.end] not in job.allow_list]

    def _enhance(
        self, job: _PolicyAnalyzer, text: str, results: list[RecognizerResult], artifacts: NlpArtifacts
    ) -> None:
        """Raise (in place) the scores of the results whose recognizer's context words are nearby."""
        key = RecognizerResult.RECOGNIZER_IDENTIFIER_KEY
        contextual = [r for r in results if r.recognition_metadata[key] in job.with_context]
        if contextual:
            recognizers = [r for r in job.recognizers if r.id in job.with_context]
            self._enhancer.enhance_using_context(text, contextual, artifacts, recognizers)


def _tagged(recognizer: EntityRecognizer, results: list[RecognizerResult]) -> list[RecognizerResult]:
    """``results`` with their recognizer's id and name in their metadata (context enhancement needs the id)."""
    for result in results:
        metadata = result.recognition_metadata
        if metadata is None:
            metadata = result.recognition_metadata = {}
        metadata.setdefault(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY, recognizer.id)
        metadata.setdefault(RecognizerResult.RECOGNIZER_NAME_KEY, recognizer.name)  # type: ignore[has-type]
    return results
