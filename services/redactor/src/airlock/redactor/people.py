"""People's names, and telling them from the organizations, products and places that look like them.

The small spaCy model finds most names but misses many from outside the English-speaking
world and takes many companies, products and cities for people. Three recognizers report
PERSON (:class:`NerPersonRecognizer`, the model's; :class:`PersonContextRecognizer`, names
that the words around them give away; :class:`GivenNameRecognizer`, a gazetteer of given
names with cues), and :func:`refine_persons` then drops the spans that the words around them
show to be an organization, a product or a place.

Ambiguity fails closed: a span is dropped only on evidence that it is not a person.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import functools
import importlib.resources
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

import regex
from presidio_analyzer import LocalRecognizer, RecognizerResult
from presidio_analyzer.predefined_recognizers import SpacyRecognizer

from airlock.redactor.spans import SpanIndex


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: A capitalized given name or surname (any script's letters, hyphens, apostrophes, "O'Brien").
#: Bounded parts and hyphenations: an unbounded ``(?:-Name)*`` made "Anna-Anna-Anna-…"
#: quadratic (every start ran to the end of the run and back).
_NAME = r"(?:\p{Lu}['’])?\p{Lu}\p{Ll}{1,40}(?:[-'’]\p{Lu}?\p{Ll}{1,40}){0,3}"
_PARTICLE = r"(?:van|von|de|da|der|den|di|del|della|dei|le|la|du|dos|das|des|ter|ten|te|zu|op|bin|al)"
_FULL_NAME = rf"{_NAME}(?:\s+{_PARTICLE}){{0,2}}\s+{_NAME}"
#: Verbs whose subject is a person, as they appear in tickets and notes.
_PERSON_VERBS = (
    "wrote|writes|said|says|called|calls|asked|asks|reports|reported|paid|pays|emailed|requested|requests|"
    "complained|confirmed|joined|cannot|can't|still|is leaving|left|approved|signed|submitted|visited"
)


#: Verbs in the past tense that only a person does, for a lone surname at the start of a
#: clause ("Walker entered the data centre", "Estrada arrived late").
_HUMAN_ONLY_VERBS = (
    "arrived|entered|talked|spoke|resigned|apologi[sz]ed|complained|phoned|texted|walked|came|went|"
    "promised|agreed|refused|insisted|admitted|forgot|smiled|laughed|shouted|visited|telephoned|asked|told|"
    "replied|answered|thanked|wondered"
)
#: What is said of people, after "was" or "is" ("Jane Roe was on hold", "Jane Roe is on leave").
_PERSON_STATES = (
    r"(?:is|was|has\s+been|had\s+been|will\s+be|is\s+being|was\s+being)\s+(?:not\s+)?(?:on\s+(?:hold|leave|call|"
    r"holiday|vacation|sick\s+leave|parental\s+leave)|out\s+of\s+(?:the\s+)?office|absent|late|sick|ill|paged|promoted|"
    r"hired|fired|dismissed|injured|married|pregnant|retiring|on\s+the\s+phone)"
)
#: Field names whose value is a person ("Caller: Roe, Jane", "holder=Jane Roe", "Attendees: …").
_PERSON_KEY = re.compile(
    r"(?<![\w.-])(?:(?:full[ _-]?)?name|(?:card|account)?[ _-]?holder|owner|contact|caller|payee|"
    r"beneficiary|customer|client|employee|visitor|guest|patient|passenger|applicant|candidate|requester|"
    r"reporter|assignee|approver|approved[ _-]by|reviewer|sender|recipient|author|signatory|"
    r"attendees?|participants?|members?|invitees?|b?cc)[ \t]*\Z",
    re.IGNORECASE,
)
#: Where a field's value may start: after ``=`` or ``:``, or after "cc" and a space.
_FIELD_SEPARATOR = re.compile(r"[=:][ \t]*|(?<=[Cc][Cc])[ \t]+")
_FIELD_NAME = rf"{_NAME}(?:[ \t]+(?:{_PARTICLE}[ \t]+){{0,2}}{_NAME}){{0,3}}"
#: One value of a person field: "Jane Roe", or a surname first ("Roe, Jane"), then where it ends.
_FIELD_VALUE = regex.compile(
    rf"(?:((?:{_PARTICLE}[ \t]+){{0,2}}{_NAME},[ \t]*{_NAME}(?:[ \t]+{_NAME})?)(?=[ \t]*(?:[/;|)\]\n]|\Z|[.](?:\s|\Z)))"
    rf"|({_FIELD_NAME}))(?=[ \t]*(?:[/;|,)\]\n]|\Z|[.!?](?:\s|\Z)|[ \t]+(?:\p{{Ll}}|\(|[-–])))"
)
#: Fields that hold a list of people.
_LIST_FIELD = regex.compile(r"(?i:attendees|participants|members|invitees|b?cc)\b")
_FIELD_LIST_GLUE = regex.compile(r"[ \t]*(?:,|;|&|\band\b)[ \t]*(?:and[ \t]+)?")
#: A sign-off on a line of its own; the name is on the next line ("Best regards,\nJane Roe").
_SIGN_OFF_LINE = regex.compile(
    r"(?im:^[ \t]*(?:(?:best|kind|warm|warmest|many)[ \t]+(?:regards|thanks|wishes)|regards|thanks|thank[ \t]+you|"
    r"cheers|sincerely|best|yours(?:[ \t]+(?:truly|sincerely))?|br|mfg|cordialement|saludos|grazie)[ \t]*[,.!]?"
    rf"[ \t]*\n[ \t]*)({_FULL_NAME}|{_NAME})[ \t]*(?=\n|\Z)"
)


class PersonContextRecognizer(LocalRecognizer):  # type: ignore[misc]
    """Names the NER model misses where the words around them leave no doubt.

    A greeting or sign-off ("Hello Mary", "kind regards, Jane"), with the name on the
    sign-off's line or the next; a role noun before a name ("customer Jane Roe", "engineer
    Kaja Pyrkosz", "Dr. Roe"); a field that holds a person ("Caller: Roe, Jane",
    "holder=Jane Roe", "Attendees: Jane Roe, Kaja Pyrkosz"); a full name followed by a
    contact in parentheses ("Jane Roe (jane@…", "Jane Roe (+44 …"), by a possessive ("Jane
    Roe's laptop"), by a verb whose subject is a person ("Jane Roe wrote"), by a contact
    detail ("Jane Roe, phone …") or by "from" and a name ("Jane Roe from Initech"); a single
    capitalized word opening a clause with a verb only people do ("Walker arrived late");
    and the words of an e-mail address's ``first.last`` part where they appear capitalized.
    """

    SCORE = 0.6
    _PATTERNS = tuple(
        regex.compile(pattern)
        for pattern in (
            r"\b(?i:Hi|Hello|Hey|Dear|Thanks|Thank you|Cheers|Regards|Attn|Attention)[,:]?"
            rf"[ \t]+({_NAME}(?:[ \t]+{_NAME})?)\b",
            r"\b(?:[Cc]ustomer|[Cc]lient|[Uu]ser|[Ee]mployee|[Cc]andidate|[Cc]ardholder|[Ee]ngineer|[Mm]anager|"
            r"[Cc]ontact(?:\s+(?:for|is))?|[Cc]olleague|[Pp]atient|[Aa]pplicant|[Cc]aller|[Rr]equester|[Aa]ssignee|"
            r"[Rr]eporter|[Bb]eneficiary|[Pp]ayee|[Vv]isitor|[Gg]uest|[Hh]older|[Rr]esearcher|[Rr]ecruiter|"
            r"[Cc]ontractor|[Cc]onsultant|[Aa]pprover|[Rr]eviewer|[Ss]ender|[Rr]ecipient|[Ss]ignatory)"
            rf"[,:=]?\s+({_FULL_NAME})\b",
            rf"\b(?:Mr|Mrs|Ms|Mx|Dr|Prof)\.?\s+({_NAME}(?:\s+{_NAME})?)\b",
            # A full name followed by a contact in parentheses, a possessive, a verb or a state of
            # a person, a contact detail, or "from" and an organization or place (one pass: the
            # name is looked for once, the words after it in turn).
            rf"\b({_FULL_NAME})(?=\s*\((?=[^()\n]{{0,80}}?(?:@|\+?\d[\d ().-]{{6,}}))|['’]s\b"
            rf"|\s+(?:{_PERSON_VERBS})\b|\s+(?:{_PERSON_STATES})\b|,?\s+(?:phone|tel|mobile|cell|e-?mail)\b"
            r"|\s+from\s+(?:the\s+)?\p{Lu})",
            rf"\b(?:from|by|for|to)\s+({_FULL_NAME})(?=\s*[;,:]|\.(?:\s|$)|\s+in\s+\p{{Lu}})",
            rf"\b(?:cover(?:s|ed|ing)?\s+for|on\s+behalf\s+of|stand(?:s|ing)?\s+in\s+for)\s+({_FULL_NAME})\b",
            rf"(?:^|(?<=[.!?:;]\s)|(?<=\n[ \t]*)|(?<=['\"“‘]))({_NAME})\s+(?:{_HUMAN_ONLY_VERBS})\b",
            rf"\b(?:talked|spoke|spoken|chatted|met)\s+(?:to|with)\s+({_NAME}(?:\s+{_NAME})?)\b",
            # Someone addressed at the start of a sentence, a quote or a line ("'Indrajit, we told you…").
            rf"(?:^|(?<=[.!?]\s)|(?<=\n[ \t]*)|(?<=['\"“‘(]))({_NAME}),[ \t]+(?=(?:we|you|I|please|can|could|would|"
            r"thanks|thank|kindly|just|let['’]?s|your|hope|here|this|I['’]m|we['’]re|you['’]re)\b)",
        )
    )
    _EMAIL_LOCAL = regex.compile(r"\b([A-Za-z]{2,})[._-]([A-Za-z]{2,})@[\w.-]+\.[A-Za-z]{2,}\b")

    def __init__(self) -> None:
        super().__init__(supported_entities=["PERSON"], name="PersonContextRecognizer")  # type: ignore[call-arg]

    def load(self) -> None:
        """Nothing to load."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        """Spans of names found by context."""
        if "PERSON" not in entities:
            return []
        spans: set[tuple[int, int]] = set()
        for pattern in self._PATTERNS:
            spans.update(match.span(1) for match in pattern.finditer(text))
        spans.update(match.span(1) for match in _SIGN_OFF_LINE.finditer(text))
        spans.update(_person_field_values(text))
        spans.update(self._named_by_email(text))
        return _person_results(
            self,
            [
                span
                for span in sorted(spans)
                if not _stop_word(text[slice(*span)])
                and not _organization(text[slice(*span)])
                and not _discourse_word(text[slice(*span)])
            ],
        )

    def _named_by_email(self, text: str) -> Iterable[tuple[int, int]]:
        """Where the ``first`` (or ``first … last``) of a ``first.last@`` address in ``text`` appears capitalized."""
        lasts: dict[str, set[str]] = {}
        for match in self._EMAIL_LOCAL.finditer(text):
            lasts.setdefault(match.group(1).capitalize(), set()).add(match.group(2).capitalize())
        if not lasts:
            return []
        spans = []
        for word in self._WORD.finditer(text):
            if word.group() not in lasts:
                continue
            after = self._NEXT_TWO.match(text, word.end())
            end = word.end()
            if after is not None:
                for group in (1, 2):
                    if after.group(group) in lasts[word.group()]:
                        end = after.end(group)
            spans.append((word.start(), end))
        return spans

    _WORD = regex.compile(r"(?<![\p{L}\p{N}_])\p{Lu}\p{Ll}+(?![\p{L}\p{N}_])")
    _NEXT_TWO = regex.compile(rf"\s+({_NAME})\b(?:\s+({_NAME})\b)?")


#: Words that open a sentence with a comma or a verb after them and are not names.
_DISCOURSE_WORDS = _words(
    "yes no ok okay sure great sorry thanks please hello hi hey dear welcome congratulations cheers "
    "first second third finally next then update note fyi btw today yesterday tomorrow tonight "
    "anyway overall instead everyone folks guys friends colleagues team all both nobody somebody"
)


def _discourse_word(span: str) -> bool:
    """Whether a one-word span is a word that opens sentences ("Unfortunately, we…", "Sorry, I…")."""
    word = span.lower()
    return " " not in span and (
        word in _DISCOURSE_WORDS or (word.endswith("ly") and _folded(word) not in given_names())
    )


def _person_field_values(text: str) -> Iterable[tuple[int, int]]:
    """The names that fields holding people hold: one per field, or a list ("Attendees: A B, C D and E F")."""
    # Looked for from the separators back (they are few) rather than at every position.
    for separator in _FIELD_SEPARATOR.finditer(text):
        key = _PERSON_KEY.search(text, max(0, separator.start() - 24), separator.start())
        if key is None:
            continue
        listing = _LIST_FIELD.match(key.group()) is not None
        position = separator.end()
        while (value := _FIELD_VALUE.match(text, position)) is not None:
            inverted = value.group(1) is not None
            yield value.span(1 if inverted else 2)
            glue = _FIELD_LIST_GLUE.match(text, value.end())
            if inverted or not listing or glue is None or glue.end() == value.end():
                break
            position = glue.end()


def _person_results(
    recognizer: PersonContextRecognizer | GivenNameRecognizer, spans: Iterable[tuple[int, int]]
) -> list[RecognizerResult]:
    """PERSON results of ``recognizer`` (its ``SCORE``) for ``spans``."""
    return [
        RecognizerResult(
            "PERSON",
            start,
            end,
            recognizer.SCORE,
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: type(recognizer).__name__,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: recognizer.id,
            },
        )
        for start, end in spans
    ]


#: Given names that are also months, days, places, nationalities or languages ("May",
#: "Jordan", "Victoria", "German"): never a person on the strength of the gazetteer, and never
#: a surname after a given name ("Anna Poland" is not a name).
_PLACE_AND_TIME_NAMES = _words(
    "january february march april may june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday "
    "german english french spanish italian dutch polish portuguese irish danish swiss norman "
    "paris london berlin jordan india china israel georgia virginia victoria florence adelaide austin "
    "dallas houston chelsea madison sydney phoenix savannah aurora brooklyn lincoln washington jackson "
    "orlando regina charlotte santiago lorraine kenya chad jersey vienna geneva milan sofia lima valencia "
    "alexandria troy salem eugene denver tyrone carolina dakota montana nevada cuba peru sierra "
    "america africa asia europe france ireland italia argentina armenia chile brazil "
    "bolivia colombia panama guinea niger mali togo oman qatar samoa tonga fiji malta cyprus lebanon syria "
    "yemen nepal laos burma japan korea iran iraq egypt libya sudan ghana benin gabon zambia angola uganda "
    "rwanda somalia eritrea austria belgium denmark england scotland wales poland romania hungary serbia "
    "croatia bosnia albania macedonia bulgaria ukraine russia latvia lithuania estonia finland norway sweden "
    "iceland holland germany spain portugal greece turkey canada mexico ecuador honduras belize jamaica haiti"
)
#: Given names that are as often a word or a product as a person ("Will", "Grace", "Julia",
#: "Alexa", "Brown"): a person only where the strongest cues say so (a greeting, a title, being
#: addressed or spoken to), though they make fine surnames ("Ellie Young").
_WORD_LIKE_NAMES = _words(
    "will mark grace amber hope faith joy rose iris lily ivy jade ruby pearl crystal dawn summer autumn "
    "winter river sky storm rain bill pat sue art bob rob jack frank earl guy max miles chase hunter "
    "carter mason cash bishop king prince duke major sterling wade dean gene ray don victor sunny lane "
    "glen dale page drew gray grey brook bay clay cliff rocky stone forest holly heather daisy violet "
    "olive ginger candy honey precious destiny harmony melody patience charity trinity unity liberty "
    "justice royal angel happy lucky silver star bella rich young long cloud price nova echo "
    "julia ada alexa siri django watson mercedes chanel dell ford harley fedora claude sage "
    "blue brown green white black bright blessed diamond delta alpha beta case chance comfort constant day "
    "deep disney channel corona"
)
_AMBIGUOUS_GIVEN_NAMES = _PLACE_AND_TIME_NAMES | _WORD_LIKE_NAMES
#: The word-like names that are more often a person than the word when they open a clause with
#: a verb ("Heather restarted…" but "Price increased…", "Page loaded…").
_MOSTLY_NAMES = _words(
    "grace amber hope joy rose iris lily ivy jade ruby pearl crystal dawn holly heather daisy violet olive "
    "julia ada dale dean wade glen drew mason carter hunter max miles jack frank earl guy bob rob pat sue "
    "mark sunny victor ray don gene bella"
)
#: Letters that Unicode does not decompose into an ASCII letter and a mark.
_FOLD = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D", "ß": "ss", "æ": "ae", "Æ": "Ae"})


def _folded(word: str) -> str:
    """``word`` lower-cased, without diacritics ("Małgorzata" → "malgorzata")."""
    if word.isascii():
        return word.lower()
    decomposed = unicodedata.normalize("NFKD", word.translate(_FOLD))
    return "".join(char for char in decomposed if not unicodedata.combining(char)).lower()


@functools.cache
def given_names() -> frozenset[str]:
    """The given-name gazetteer (ASCII-folded, lower case), less stop words and ambiguous names.

    ``data/given_names.txt`` holds the names seen in at least 10 of the sources of the
    nomquamgender package's data (MIT licence; see the file's header), about 20,000 of them,
    from every language that data covers.
    """
    from spacy.lang.en.stop_words import STOP_WORDS

    text = importlib.resources.files("airlock.redactor").joinpath("data/given_names.txt").read_text("utf-8")
    names = (line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return frozenset(name for name in names if name not in _AMBIGUOUS_GIVEN_NAMES and name not in STOP_WORDS)


#: spaCy labels that make a single word something other than a person. Only dates: the small
#: model calls an unfamiliar given name a place, a nationality or a company as often as not.
_NOT_PERSON_LABELS = frozenset({"DATE", "TIME"})


class GivenNameRecognizer(LocalRecognizer):  # type: ignore[misc]
    """People the NER model does not know, found by a gazetteer of given names from many languages.

    The small English model misses "Wojciech Zieliński" or "Sjoerd" in a list, a ``cc:`` line
    or a signature. Here a capitalized word that is a known given name (compared without
    diacritics) is a person when it is followed, on the same line, by a capitalized
    surname (with "van der", "de"… between them): "Małgorzata Wróbel". A given name
    alone is a person only where the words around it say so: a greeting, a thanks or a
    role before it ("Hi Dagmar", "Grazie, Ilaria", "ask Krzysztof", "reviewer Thijs"), a
    verb or a possessive after it ("Wiebke approved", "Sjoerd's laptop"), a line of its
    own (a signature), a place in a list next to a person found so ("Thibault or Wiebke").

    Names that are as often words, months, places or products are not in the gazetteer
    (:data:`_AMBIGUOUS_GIVEN_NAMES`); a word the NER model labels a date on its own is not
    taken; a name right after another capitalized word that is
    not a greeting or a role ("Lockheed Martin") is taken only with a surname.
    :func:`refine_persons` then applies the organization checks to what is found here.
    """

    SCORE = 0.6
    _CANDIDATE = regex.compile(r"(?<![\p{L}\p{N}@._/-])(\p{Lu}\p{Ll}+)(?:-\p{Lu}\p{Ll}+)?(?![\p{L}\p{N}@])")
    _SURNAME = regex.compile(rf"(?:[ \t]+{_PARTICLE}){{0,2}}[ \t]+{_NAME}(?![\p{{L}}\p{{N}}@])")
    _CUE_BEFORE = regex.compile(
        r"(?:\b(?:hi|hello|hey|dear|thanks|thank\s+you|thx|cheers|regards|greetings|welcome|morning|evening|"
        r"hallo|liebe|lieber|danke|merci|bonjour|salut|grazie|ciao|gracias|hola|obrigad[oa]|ol[aá]|dzi[eę]kuj[eę]|"
        r"cze[sś][cć]|hoi|dank\s+je|bedankt|namaste|"
        r"cc|bcc|attn|attention|ping|ask|asked|tell|told|remind|thank|cc'd|loop\s+in|looped\s+in|spoke\s+with|"
        r"talked\s+to|met\s+with|call|called|email|emailed|message|messaged|contact|contacted|with|from|by|per|"
        r"owner|assignee|assigned\s+to|reviewer|approver|approved\s+by|requester|reporter|lead|manager|director|"
        r"engineer|developer|analyst|admin|administrator|intern|colleague|teammate|consultant|architect|"
        r"customer|client|user|employee|candidate|contractor|supervisor|coordinator|specialist|agent|"
        r"mr|mrs|ms|mx|dr|prof|herr|frau|sr|sra|sig|signora|mme|mlle|m)\.?[,:]?[ \t]+)\Z",
        regex.IGNORECASE,
    )
    #: The cues before a name that leave no doubt even for a name that is also a word ("Hi Grace").
    _STRONG_CUE_BEFORE = regex.compile(
        r"(?:\b(?:hi|hello|hey|dear|thanks|thank\s+you|thx|cheers|morning|hallo|liebe|lieber|danke|merci|bonjour|"
        r"salut|grazie|ciao|gracias|hola|cc|bcc|attn|ping|pinged|ask|asked|tell|told|remind|reminded|thank|thanked|"
        r"loop\s+in|looped\s+in|spoke\s+(?:with|to)|talked\s+(?:with|to)|met\s+with|"
        r"mr|mrs|ms|mx|dr|prof|herr|frau|mme)\.?[,:]?[ \t]+)\Z",
        regex.IGNORECASE,
    )
    _CUE_AFTER = regex.compile(
        rf"(?:['’]s\b|,?[ \t]+(?:{_PERSON_VERBS}|{_HUMAN_ONLY_VERBS}|will|would|could|can|has|had|is|was|and\s+I|"
        r"mentioned|noted|(?:already|also|just|never|then)\b|\p{Ll}{2,}ed\b|from[ \t]+(?:the[ \t]+)?\p{Lu}))"
    )
    #: A name opening a sentence, a quote or a line and followed by a comma: someone addressed ("Emily, we…").
    _VOCATIVE_BEFORE = regex.compile(r"(?:^|[.!?][ \t]+|['\"“‘(][ \t]*|\n[ \t]*)\Z")
    #: A name alone on its line (a signature, an addressee), or after the comma that closes a thanks.
    _OWN_LINE = regex.compile(r"(?:^|\n)[ \t]*(?:[-*•–][ \t]*)?\Z")
    _LINE_END = regex.compile(r"[ \t]*[,.!]?[ \t]*(?:\n|\Z)")
    _LIST_GLUE = regex.compile(r"[ \t]*(?:,|;|/|&|\band\b|\bor\b|\bund\b|\bet\b|\be\b|\by\b|\bi\b)[ \t]*(?:and[ \t]+)?")
    _LEFT_WINDOW = 40

    def __init__(self) -> None:
        super().__init__(supported_entities=["PERSON"], name="GivenNameRecognizer")  # type: ignore[call-arg]

    def load(self) -> None:
        """Read the gazetteer now rather than on the first text."""
        given_names()

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        """Spans of names found by the gazetteer and the words around them."""
        if "PERSON" not in entities:
            return []
        names = given_names()
        candidates = list(self._CANDIDATE.finditer(text))
        hits = [m for m in candidates if _folded(m.group(1)) in names]
        addressed = [
            m.span() for m in candidates if _folded(m.group(1)) in _WORD_LIKE_NAMES and self._addressed(text, m)
        ]
        if not hits:
            return _person_results(self, addressed)
        not_person = set(_labelled_spans(nlp_artifacts, _NOT_PERSON_LABELS, words=1))
        spans: list[tuple[int, int]] = []
        alone: list[tuple[int, int]] = []
        for hit in hits:
            start, end = hit.span()
            if (start, end) in not_person:
                continue
            before = text[max(0, start - self._LEFT_WINDOW) : start]
            surname = self._SURNAME.match(text, end)
            if surname is not None and _folded(surname.group().split()[-1]) not in _PLACE_AND_TIME_NAMES:
                if not self._after_other_capitalized(before) and not self._names_organization(text, surname.end()):
                    spans.append((start, surname.end()))
                continue
            if (
                self._CUE_BEFORE.search(before)
                or self._CUE_AFTER.match(text, end)
                or (text.startswith(",", end) and self._VOCATIVE_BEFORE.search(before))
                or (self._OWN_LINE.search(before) and self._LINE_END.match(text, end))
                or (before.rstrip().endswith(",") and self._LINE_END.match(text, end))
            ):
                spans.append((start, end))
            else:
                alone.append((start, end))
        spans += self._listed_with(text, spans, alone)
        return _person_results(self, sorted({*spans, *addressed}))

    def _addressed(self, text: str, match: regex.Match[str]) -> bool:
        """Whether the word of ``match`` is greeted, titled, addressed or spoken to ("Hi Grace", "Julia, can you…")."""
        start, end = match.span()
        before = text[max(0, start - self._LEFT_WINDOW) : start]
        return bool(
            self._STRONG_CUE_BEFORE.search(before)
            or (text.startswith(",", end) and self._VOCATIVE_BEFORE.search(before))
            or (_folded(match.group(1)) in _MOSTLY_NAMES and self._ACTED.match(text, end))
        )

    #: A verb in the past tense right after a word: its subject acted ("Heather restarted the cluster").
    _ACTED = regex.compile(rf"[ \t]+(?:{_PERSON_VERBS}|{_HUMAN_ONLY_VERBS}|\p{{Ll}}{{2,}}ed)\b")

    _CAPITALIZED_RUN = regex.compile(r"(?:[ \t]+\p{Lu}[\p{L}.&'’-]*){1,2}")

    def _names_organization(self, text: str, end: int) -> bool:
        """Whether the capitalized words that go on from ``end`` end an organization's name ("Blue Yonder Airlines")."""
        run = self._CAPITALIZED_RUN.match(text, end)
        return run is not None and any(word.lower() in _ORG_ENDINGS for word in run.group().split())

    def _after_other_capitalized(self, before: str) -> bool:
        """Whether a capitalized word that is not a greeting, a title or a role ends ``before``."""
        previous = regex.search(r"(\p{Lu}[\p{L}'’.-]*)[ \t]+\Z", before)
        if previous is None or self._CUE_BEFORE.search(before):
            return False
        at_sentence_start = regex.search(r"(?:^|[.!?:;]\s+|\n[ \t]*(?:[-*•–][ \t]*)?)\Z", before[: previous.start()])
        return at_sentence_start is None and _folded(previous.group(1)) not in given_names()

    def _listed_with(
        self, text: str, found: list[tuple[int, int]], alone: list[tuple[int, int]]
    ) -> list[tuple[int, int]]:
        """The lone given names that share a list with a name found ("Thibault or Wiebke")."""
        # Only the nearest person on either side can be joined to a span by list glue alone.
        ends = sorted(end for _, end in found)
        starts = sorted(start for start, _ in found)
        added: list[tuple[int, int]] = []
        changed = True
        while changed and alone:
            changed = False
            for span in list(alone):
                start, end = span
                before = bisect.bisect_right(ends, start) - 1
                after = bisect.bisect_left(starts, end)
                if (before >= 0 and self._LIST_GLUE.fullmatch(text, ends[before], start)) or (
                    after < len(starts) and self._LIST_GLUE.fullmatch(text, end, starts[after])
                ):
                    alone.remove(span)
                    bisect.insort(ends, end)
                    bisect.insort(starts, start)
                    added.append(span)
                    changed = True
        return added


def _stop_word(span: str) -> bool:
    from spacy.lang.en.stop_words import STOP_WORDS

    return " " not in span and span.lower() in STOP_WORDS


def _organization(span: str) -> bool:
    """Whether the words of ``span`` name an organization ("Acme Logistics", "Banco do Brasil", "Rossi S.p.A.")."""
    words = span.split()
    return (
        words[-1].lower() in _ORG_ENDINGS
        or (len(words) > 1 and words[0].lower() in _ORG_LEADING)
        or _ENDS_WITH_LEGAL_FORM.search(span) is not None
        or ("&" in span and _firm_of_partners(*span.split("&", 1)))
    )


#: Legal forms of companies in many jurisdictions, as they are written after the name
#: ("Hoffmann GmbH", "Kowalski sp. z o.o.", "Virtanen Oy", "Halvorsen AS"). Case matters:
#: "AS" and "SA" are legal forms, "as" and "Sa" are not.
LEGAL_FORMS = _words(
    # English-speaking countries
    "Inc Inc. Incorporated Corp Corp. Corporation Co. Company LLC L.L.C. LLP LP L.P. Ltd Ltd. Limited PLC plc "
    "PLLC P.C. Pty Pty. Pte Pte. Pvt Pvt. Bhd Sdn "
    # German-speaking countries
    "GmbH gGmbH mbH AG KG KGaA OHG GbR e.V. SE "
    # French, Spanish, Italian, Portuguese
    "SA S.A. SAS S.A.S. SASU SARL S.à.r.l. EURL SNC SCA SpA S.p.A. Srl S.r.l. SRL S.n.c. S.a.s. SL S.L. S.L.U. "
    "S.A.U. SAC S.A.C. EIRL Lda Lda. Ltda Ltda. S/A EIRELI "
    # Benelux, Nordics, Baltics
    "BV B.V. NV N.V. VOF AB ASA AS A/S ApS I/S IVS Oy Oyj hf. ehf. OÜ UAB SIA "
    # Central and Eastern Europe
    "sp.j. sp.k. s.r.o. a.s. k.s. v.o.s. d.o.o. d.d. Kft. Zrt. Nyrt. EOOD OOD OOO ZAO PAO OAO A.Ş. "
    # Asia
    "K.K. G.K."
) | {"sp. z o.o.", "Sp. z o.o.", "spol. s r.o.", "S.à r.l.", "S.A. de C.V.", "S. de R.L."}
_LEGAL_FORM = "|".join(regex.escape(form) for form in sorted(LEGAL_FORMS, key=len, reverse=True))
_ENDS_WITH_LEGAL_FORM = regex.compile(rf"(?<=\S)\s*,?\s+(?:{_LEGAL_FORM})\Z")
#: The second half of a partnership's name: "& Sons", "& Co.", "& Partners".
_PARTNERS = _words("co co. cie cie. son sons partner partners associates brothers bros bros. company")


def _firm_of_partners(left: str, right: str) -> bool:
    """Whether ``left`` & ``right`` is a firm ("Ernst & Young", "Garcia & Sons"), not two people ("Anna & Tom").

    A side that is one word and not a given name is a surname or "Sons": people are listed
    with their given names.
    """
    sides = [left.split(), right.split()]
    if not all(sides):
        return False
    if sides[1][0].lower() in _PARTNERS:
        return True
    return any(len(side) == 1 and _folded(side[0]) not in given_names() for side in sides)


#: Words that end an organization's name (legal forms, and the nouns companies and
#: institutions are named with), never a person's.
_ORG_ENDINGS = _words(
    "inc inc. corp corp. corporation co co. company llc llp ltd ltd. limited plc gmbh ag kg sa sas sarl "
    "bv b.v. nv n.v. s.a. s.l. spa s.p.a. "
    "group holdings bank airlines airways traders importers exporters industries systems solutions "
    "technologies labs laboratories partners associates foundation university college institute agency "
    "ministry department works logistics motors foods pharma pharmaceuticals energy insurance software "
    "consulting capital ventures investments securities media networks telecom communications enterprises "
    "dynamics robotics analytics electronics manufacturing services healthcare hospital clinic toys games "
    "studios entertainment retail stores markets brands trust council commission authority society "
    "association federation organization organisation science sciences research"
)
#: Words that start an organization's name ("Deutsche Bahn", "Banco do Brasil", "the IRS").
_ORG_LEADING = _words("the deutsche banco banque banca grupo groupe société compagnie first national royal")


class NerPersonRecognizer(SpacyRecognizer):  # type: ignore[misc]
    """spaCy's entities, minus "people" that are companies or places.

    Dropped: a PERSON with a digit in it ("EUR 89,000.00"), a short acronym ("PII"), one
    whose last word names a company ("Globex Corporation"), and a one-word PERSON right
    after "in" ("based in Rotterdam"): people are not *in* a sentence. Leading role words
    and titles the model took into the name ("Customer Jane Roe") are cut off.
    """

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        """The NER model's entities of the wanted types."""
        results: list[RecognizerResult] = super().analyze(text, entities, nlp_artifacts)
        kept = []
        for result in results:
            if result.entity_type == "PERSON":
                result.start = _skip_leading_role(text, result.start, result.end)
                if _not_a_person(text, result.start, result.end):
                    continue
            kept.append(result)
        return kept


#: Words the model sometimes takes into a name ("Customer Jane Roe", "Dear Jane").
_LEADING_NOT_NAME = _words(
    "customer client user employee candidate cardholder engineer manager contact colleague patient "
    "applicant caller requester assignee reporter beneficiary payee vendor agent hi hello hey dear "
    "thanks cheers regards attn mr mrs ms mx dr prof sir madam"
) | _words(
    # Verbs a prompt opens with ("Explain Initech's results", "Email Jane Roe"); none is also a
    # given name ("Mark", "Bill", "Grant" are left out on purpose).
    "explain write draft summarise summarize compare translate list give tell ask send call email reply "
    "rewrite check review create prepare describe classify update forward schedule book find show help "
    "generate suggest recommend analyse analyze calculate convert format fix add remove invite notify "
    "remind thank welcome congratulate escalate approve reject confirm cancel refund pay wire transfer "
    "reconcile verify investigate close open assign ping contact message text phone"
)


def _skip_leading_role(text: str, start: int, end: int) -> int:
    """``start`` moved past leading role words and titles, while a name remains after them."""
    while True:
        match = re.match(r"([A-Za-z]+)\.?\s+", text[start:end])
        if match is None or match.group(1).lower() not in _LEADING_NOT_NAME:
            return start
        start += match.end()


def _not_a_person(text: str, start: int, end: int) -> bool:
    span = text[start:end]
    if _organization(span) or any(char.isdigit() for char in span):
        return True
    if span.isupper() and len(span) <= 5:
        return True  # an acronym ("PII", "IP", "HR")
    return " " not in span.strip() and _after_in(text, start)


def _after_in(text: str, start: int) -> bool:
    """Whether " in " comes right before ``start``: people are not *in* a sentence ("our office in Lyon")."""
    return text[max(0, start - 4) : start] == " in "


#: Words just before a span that make it an organization or a place, not a person: a
#: business role ("vendor Globex"), "at" ("works at Initech"), "the" ("the Rotterdam office"),
#: company moves ("is leaving Initech", "moved to Initech"), trade ("charged by Initech",
#: "an order from Initech").
_ORG_BEFORE = re.compile(
    r"(?:\b(?:vendor|supplier|carrier|manufacturer|provider|reseller|distributor|subsidiary|competitor|employer|"
    r"insurer|lender|firm|company|agency|at|the|leaving|joined|joining|joins|moved\s+to|moving\s+to|"
    r"works\s+for|worked\s+for|working\s+for|employed\s+by|hired\s+by|acquired\s+by|charged\s+by|"
    r"billed\s+by|invoiced\s+by|(?:license|licence|order|invoice|subscription|contract|shipment|purchase|quote|"
    r"delivery|parcel)s?(?:\s+(?:for|no\.?|number|\#))?(?:\s+\#?[\w/-]*\d[\w/-]*)?\s+from)\s+)\Z",
    re.IGNORECASE,
)
#: A field whose value is an organization, a product or a place ("merchant=Initech", "- Site: Porto"):
#: ``key=`` anywhere, ``Key:`` only where a field starts (a line, or after ``;``, ``|`` or ``/``),
#: so that "the European Central Bank: Jane Roe reports…" is not a field.
_THING_KEY = (
    r"(?:merchant|vendor|supplier|company|employer|organi[sz]ation|org|bank|issuer|acquirer|product|app|"
    r"application|service|site|office|city|location|country|region|branch|department|project|platform)"
)
_THING_FIELD_BEFORE = re.compile(
    rf"(?:\b{_THING_KEY}[ \t]*=|(?:^|[;|/])[ \t]*(?:[-*•–][ \t]*)?{_THING_KEY}[ \t]*:)[ \t]*\Z",
    re.IGNORECASE | re.MULTILINE,
)


def _after_thing_field(text: str, start: int) -> bool:
    """Whether ``start`` is where the value of a field naming an organization, product or place begins."""
    line_start = text.rfind("\n", 0, start) + 1
    return _THING_FIELD_BEFORE.search(text, max(line_start, start - 80), start) is not None


#: Travel to a place ("a business trip to Gdansk", "flying to Porto").
_TRAVEL_BEFORE = re.compile(
    r"\b(?:trip|travel|travell?ing|travell?ed|flight|flights|fly|flying|flew|relocat(?:e|ed|ing|ion)|"
    r"deliver(?:y|ies)|shipments?|shipping|based|located|headquartered)\s+(?:to|in|from)\s+\Z",
    re.IGNORECASE,
)
#: What follows an organization's name: a legal form ("Initech Ltd"), a possession only an
#: organization has ("Initech's platform"), a part of an organization ("the Rotterdam office").
_ORG_AFTER = regex.compile(
    rf"(?:,?\s+(?:{_LEGAL_FORM})(?![\p{{L}}\p{{N}}])"
    # The noun an organization is named with, capitalized after the span ("Soylent Foods").
    rf"|[ \t]+(?:{'|'.join(sorted(word.capitalize() for word in _ORG_ENDINGS if word.isalpha()))})\b"
    # What is said of software, never of people ("Zoom is not supported in …").
    r"|\s+(?:is|are|was|were|isn['’]t|aren['’]t)\s+(?:not\s+|no\s+longer\s+|now\s+)?(?:supported|installed|"
    r"compatible|licen[sc]ed|deployed|configured|enabled|disabled|deprecated|crashing|patched|upgraded)\b"
    r"|\s*&\s*(?:Co|Cie|Sons?|Partners?|Associates|Brothers|Bros)\b"
    r"|['’]s\s+(?:platform|API|website|web\s+site|app|portal|headquarters|HQ|CEO|CFO|CTO|board|shareholders|stock|"
    r"shares|revenue|brand|servers?|data\s+cent(?:er|re)s?|tenant|subsidiar(?:y|ies)|customers|employees|"
    r"offices?|branch(?:es)?|products?|services|stores?|firmware|software|support|licen[cs]es?|pricing|"
    r"terms|contracts?|invoices?|quotes?|offers?|proposals?|devices|laptops|plants?|factor(?:y|ies)|"
    r"warehouses?|stores|outage|acquisition|merger|earnings|annual\s+report|auditors?|roadmap|portfolio|"
    r"market\s+share|share\s+price|stock\s+price|IPO|supply\s+chain|procurement|"
    r"(?:Q[1-4]|quarterly|annual|fiscal|FY\s?\d*)\s+(?:results|earnings|report|numbers|figures|revenue|guidance)|"
    r"(?:travel|expense|security|privacy|refund|returns?|pricing|procurement|data|retention|remote\s+work)\s+"
    r"polic(?:y|ies))\b"
    # "Initech's new Zoom integration": an adjective and a product's name between.
    r"|['’]s\s+(?:new|latest|next|upcoming|current|updated|public|official)\s+(?:[\p{Lu}\d][\w.-]*\s+){0,3}"
    r"(?:platform|API|website|app|portal|integration|release|product|service|offering|plan|pricing|version)\b"
    # A department or a desk of an organization ("Dear Initech support", "called Globex billing").
    r"|\s+(?:support|helpdesk|help\s+desk|service\s+desk|customer\s+(?:service|care|support)|billing|"
    r"sales|procurement|legal|compliance)\b"
    # A model or version number ("Pixel 8", "Windows 11"), not a count or a phone number.
    r"|[ \t]+\d{1,2}(?:\.\d+)?(?![\d.,:/-]*\d)"
    r"(?![ \t]*(?:\d|%|hours?|h\b|days?|weeks?|months?|years?|times|x\b|am\b|pm\b))"
    r"|\s+(?:office|offices|branch|headquarters|HQ|subsidiary|platform|tenant|integration|instance|portal|"
    r"console|servers|data\s+cent(?:er|re)|plant|factory|warehouse|campus"
    # What software has: "the Jenkins pipeline", "Cassandra nodes", "Grafana dashboards".
    r"|instances|server|cluster|clusters|pipelines?|dashboards?|plugins?|plug-ins?|connectors?|brokers?|nodes|"
    r"jobs|deployments?|workspaces?|database|DB|API|APIs|SDK|subscription|topics?|consumers?|producers?|"
    r"tokens|modules?|schema|repos?|repository|migration|upgrade|rollout|release|version|edition|"
    r"environment|stack|tenants|integrations|licen[cs]es|seats)\b)"
)
#: Words just before a span that make it an organization or a product when the span is not a
#: person's given name (and surname): the NER model alone is not enough to take "Hoffmann"
#: in "partners Hoffmann" or "a proposal for Hoffmann" for a person.
_ORG_BEFORE_UNLESS_GIVEN = re.compile(
    r"(?:\b(?:partners|vendors|suppliers|carriers|manufacturers|providers|resellers|distributors|competitors|"
    r"insurers|lenders|banks|auditors|brands|companies|firms|such\s+as|including|"
    r"(?:tender|bid|RFP|RFQ|partnership)s?\s+(?:for|with|to)|"
    r"(?:migrat(?:e|ed|es|ing|ion)|mov(?:e|ed|es|ing)|switch(?:ed|es|ing)?|upgrad(?:e|ed|es|ing)|port(?:ed|ing)?)"
    r"(?:\s+\w+){0,3}?\s+(?:from|to|off)|"
    r"(?:log(?:ged|ging|s)?|sign(?:ed|ing|s)?)\s+(?:in(?:to)?|on)(?:\s+to)?|"
    r"deploy(?:ed|ing|s)?|install(?:ed|ing|s)?|configur(?:e|ed|es|ing)|restart(?:ed|ing|s)?|"
    r"(?:runs?|running|hosted|built|deployed)\s+on|powered\s+by|integrat(?:e|ed|es|ing|ion)\s+with|"
    r"replac(?:e|ed|es|ing)|compar(?:e|ed|es|ing)|via|using|into)[,:]?\s+)\Z",
    re.IGNORECASE,
)
#: A title or a greeting right before a word: a person, even when the word also names a company ("Mr Dell").
_PERSON_RIGHT_BEFORE = re.compile(
    r"\b(?:Mr|Mrs|Ms|Mx|Dr|Prof|Sir|Madam|Herr|Frau|Mme|M|Sr|Sra|Hi|Hello|Hey|Dear|Thanks|Cheers|Regards)\.?,?\s+\Z"
)
#: What joins the items of a list ("Halvorsen, Lindqvist and Moreau").
_LIST_GLUE = regex.compile(r"\s*(?:,|;|/|&|\band\b|\bor\b|\bnor\b)\s*(?:(?:and|or)\s+)?")
#: What joins two products compared or replaced ("from Hudson to Jenkins", "Kafka vs. Pulsar").
_PAIR_GLUE = regex.compile(r"\s*(?:,|;|/|&|\band\b|\bor\b|\bto\b|\binto\b|\bvs\b\.?|\bversus\b|\bwith\b)\s*")
_FROM_AFTER_NAME = re.compile(r"\s+from\s+\Z")
_ADDRESS_TO_CITY = re.compile(r",\s*")
#: A word inside a name span that is not part of the name ("Jira at Fabrikam").
_CONNECTOR = regex.compile(rf"\s+(?!{_PARTICLE}\s)\p{{Ll}}[\p{{Ll}}-]*\s+")
#: The recognizers whose PERSON spans :func:`refine_persons` judges (a deny list is the policy's word).
_PERSON_SOURCES = frozenset({"SpacyRecognizer", "PersonContextRecognizer", "GivenNameRecognizer"})
#: spaCy labels for an organization or a product.
_ORG_LABELS = frozenset({"ORG", "PRODUCT"})
#: An organization that says it is one: capitalized words and a legal form or a partnership ("Ferguson & Co.").
_NAMED_ORGANIZATION = regex.compile(
    rf"\b{_NAME}(?:[ \t]+{_NAME}){{0,3}}(?:,?[ \t]+(?:{_LEGAL_FORM})(?![\p{{L}}\p{{N}}])"
    r"|[ \t]*&[ \t]*(?:Co\.?|Cie\.?|Sons?|Partners?|Associates|Brothers|Bros\.?)(?![\p{L}\p{N}]))"
)
#: spaCy labels of names of any kind (the model mixes them up).
_ANY_NAME_LABELS = frozenset({"PERSON", "ORG", "PRODUCT", "GPE", "FAC", "NORP", "LOC"})


@functools.cache
def known_organizations() -> frozenset[str]:
    """Well-known companies and products whose names look like people's (``data/known_organizations.txt``)."""
    text = importlib.resources.files("airlock.redactor").joinpath("data/known_organizations.txt").read_text("utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def refine_persons(text: str, results: list[RecognizerResult], nlp_artifacts: Any = None) -> list[RecognizerResult]:
    """``results`` without the PERSON spans that the words around them show to be something else.

    A name span is first stripped of leading role words ("Vendor Globex" → "Globex"), cut at
    a possessive ("Jane Roe's Zoom" → "Jane Roe") and split at
    a lower-case word that is not a name particle ("Jira at Fabrikam" → "Jira", "Fabrikam");
    each piece is then dropped when its own words name an organization (a legal form in any
    of many languages, "& Sons"), when the words before or after it do (:data:`_ORG_BEFORE`,
    :data:`_ORG_AFTER`), when it follows a person and "from" ("Jane Roe from Initech"), or
    when it is the single word after a street address and a comma (the city of the address).

    Weaker cues (:data:`_ORG_BEFORE_UNLESS_GIVEN`: "partners Hoffmann", "migrate to
    Hoffmann"; never words that as often precede a person: "escalate to", "offer to", "contract
    with"; a place in a list next to an organization: "Moreau SA and Jansen") drop a piece
    only when it does not start with a known given name, or when the NER model (through
    ``nlp_artifacts``) labels it an organization or a product. A piece that is a well-known
    company or product (:func:`known_organizations`: "Morgan Stanley", "Bosch", "Jenkins") is
    dropped unless a title or a greeting is right before it; one that is also a given name
    ("Cassandra", "Hudson") only with a cue, or next to another product ("from Hudson to Jenkins").
    """
    name_key = RecognizerResult.RECOGNIZER_NAME_KEY
    persons = [
        r
        for r in results
        if r.entity_type == "PERSON" and (r.recognition_metadata or {}).get(name_key) in _PERSON_SOURCES
    ]
    if not persons:
        return results
    chosen = {id(r) for r in persons}
    kept = [r for r in results if id(r) not in chosen]
    person_ends = {r.end for r in persons}
    address_ends = {r.end for r in results if r.entity_type == "STREET_ADDRESS"}
    labelled_org = _labelled_spans(nlp_artifacts, _ORG_LABELS)
    # Indexed: asked per name piece, pairwise scans were quadratic on a hostile prompt.
    org_index, person_index = SpanIndex(labelled_org), SpanIndex((r.start, r.end) for r in persons)
    labelled_org_set = set(labelled_org)
    # Spans a cue (a greeting, a role, a verb) found: a person, not a company named after one.
    cued = {(r.start, r.end) for r in persons if r.recognition_metadata[name_key] != "SpacyRecognizer"}
    by_gazetteer = {(r.start, r.end) for r in persons if r.recognition_metadata[name_key] == "GivenNameRecognizer"}
    organizations: list[tuple[int, int]] = []
    undecided: list[tuple[RecognizerResult, int, int, bool]] = []
    for person in persons:
        for start, end in _name_pieces(text, _skip_leading_role(text, person.start, person.end), person.end):
            if _names_something_else(text, start, end, person_ends, address_ends):
                organizations.append((start, end))
                continue
            span = text[start:end]
            given = _folded(span.split()[0]) in given_names()
            known = span in known_organizations()
            single = " " not in span
            if single and (
                # A word the model calls an organization, that no cue found as a person ("Explain Initech's").
                (not given and (start, end) in labelled_org_set and (start, end) not in cued)
                # A given name inside a longer organization's name ("Pied Piper", "Lockheed Martin").
                or ((start, end) in by_gazetteer and org_index.contains_strictly(start, end))
                # The company line under a signature's name ("Jane Roe\nInitech").
                or (not given and _company_line_of_signature(text, start, end, person_index))
            ):
                organizations.append((start, end))
                continue
            if known and not (given and " " not in span):
                # "Morgan Stanley" is a bank; "Cassandra" alone may be a person (below).
                if _PERSON_RIGHT_BEFORE.search(text, max(0, start - 12), start):
                    _keep_piece(kept, person, start, end)
                else:
                    organizations.append((start, end))
                continue
            # Weak cues decide for a single word that is not a given name ("Hoffmann"), a known
            # product that is also one ("Cassandra"), or what the model calls an organization.
            weak = known or (not given and (" " not in span or org_index.contains(start, end)))
            if weak and _ORG_BEFORE_UNLESS_GIVEN.search(text[max(0, start - 60) : start]):
                organizations.append((start, end))
                continue
            if weak or (" " not in span and (start, end) not in cued):
                undecided.append((person, start, end, known))
                continue
            _keep_piece(kept, person, start, end)
    # A piece listed with an organization is one too ("Moreau SA, Jansen and Kowalski"), and a
    # product that is also a given name is one next to another product ("from Hudson to Jenkins").
    # The organizations are those dropped above, and what the model calls one (or what names
    # itself one: "Hoffmann GmbH") that nobody calls a person.
    if undecided:
        named = [(a, b) for a, b in _labelled_spans(nlp_artifacts, _ANY_NAME_LABELS) if _organization(text[a:b])]
        named += [match.span() for match in _NAMED_ORGANIZATION.finditer(text)]
        organizations += [
            (a, b)
            for a, b in {*labelled_org, *named}
            # Not an acronym: the model calls "IBAN" or "SSN" an organization too.
            if not text[a:b].isupper() and not person_index.overlaps(a, b)
        ]
    changed = True
    while changed:
        changed = False
        for item in list(undecided):
            _, start, end, ambiguous = item
            glue = _PAIR_GLUE if ambiguous else _LIST_GLUE
            if any(
                glue.fullmatch(text, org_end, start) or glue.fullmatch(text, end, org_start)
                for org_start, org_end in organizations
                if org_end <= start or end <= org_start
            ):
                undecided.remove(item)
                organizations.append((start, end))
                changed = True
    for person, start, end, _ in undecided:
        _keep_piece(kept, person, start, end)
    return kept


def _company_line_of_signature(text: str, start: int, end: int, persons: SpanIndex) -> bool:
    """Whether ``start:end`` has its line to itself right under a line that is all a person's name."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    if line_start == 0 or text[line_start:start].strip() or text[end : len(text) if line_end < 0 else line_end].strip():
        return False
    previous_start = text.rfind("\n", 0, line_start - 1) + 1
    previous = text[previous_start : line_start - 1]
    name_start = previous_start + len(previous) - len(previous.lstrip())
    name_end = previous_start + len(previous.rstrip())
    return name_end > name_start and persons.contains(name_start, name_end)


def _keep_piece(kept: list[RecognizerResult], person: RecognizerResult, start: int, end: int) -> None:
    piece = copy.copy(person)
    piece.start, piece.end = start, end
    kept.append(piece)


def _labelled_spans(nlp_artifacts: Any, labels: frozenset[str], *, words: int | None = None) -> list[tuple[int, int]]:
    """Offsets of the entities the NER model gave one of ``labels`` (only those of ``words`` tokens, if given)."""
    return [
        (start, end)
        for start, end, label, length in _entities(nlp_artifacts)
        if label in labels and (words is None or length == words)
    ]


def _entities(nlp_artifacts: Any) -> list[tuple[int, int, str, int]]:
    """The NER model's entities as (start, end, label, tokens), read from the document once per text.

    ``Doc.ents`` builds new ``Span`` objects on every access; the recognizers ask several times.
    """
    cached: list[tuple[int, int, str, int]] | None = getattr(nlp_artifacts, "_airlock_entities", None)
    if cached is not None:
        return cached
    doc = getattr(nlp_artifacts, "tokens", None)
    if doc is None or not hasattr(doc, "ents"):
        return []
    entities = [(ent.start_char, ent.end_char, ent.label_, len(ent)) for ent in doc.ents]
    # An artifacts object that takes no new attributes is read again next time.
    with contextlib.suppress(AttributeError):
        nlp_artifacts._airlock_entities = entities
    return entities


def _name_pieces(text: str, start: int, end: int) -> list[tuple[int, int]]:
    return [piece for a, b in _line_pieces(text, start, end) for piece in _word_pieces(text, a, b)]


def _word_pieces(text: str, start: int, end: int) -> list[tuple[int, int]]:
    span = text[start:end]
    possessive = regex.search(r"['’]s\b", span)
    if possessive is not None and possessive.start() > 0:
        span = span[: possessive.start()]
    pieces, cursor = [], 0
    for connector in _CONNECTOR.finditer(span):
        pieces.append((start + cursor, start + connector.start()))
        cursor = connector.end()
    pieces.append((start + cursor, start + len(span.rstrip())))
    # A piece is a name when one of its words is capitalized ("van Hemert" is; "at" is not).
    return [(a, b) for a, b in pieces if any(word[:1].isupper() for word in text[a:b].split())]


#: What starts a line that does not go on with a name from the line before: a list marker,
#: or a field's label ("- Callback: …").
_NEW_ITEM = regex.compile(r"[ \t]*(?:[-*•–>#]|\p{L}[\w ]{0,30}[:=])")
_LINE = regex.compile(r"[^\n]+")
_NAME_WORD = regex.compile(_NAME)
#: What may stand before a name that has a line of its own: indentation, a list marker.
_LINE_LEAD = regex.compile(r"[ \t]*(?:[-*•–>][ \t]*)?")


def _line_pieces(text: str, start: int, end: int) -> list[tuple[int, int]]:
    r"""The span cut at line breaks where the next line does not go on with the name.

    The model sometimes runs a name into the next line of a signature or a record
    ("Jane Roe\nInitech", "Jane\n- Callback: …"). A hard-wrapped sentence ("ask Jane\nRoe
    about it") goes on with the name, so the span stays whole unless the name has its line to
    itself (a signature), the next line is a line of its own (it ends where the span ends) or
    a new item. A later line's piece stays a name only if it looks like a whole one (two
    capitalized words, or a known given name); a lone other word on a line of its own is the
    company or the label of a signature.
    """
    end = start + len(text[start:end].rstrip())
    newline = text.find("\n", start, end)
    if newline < 0:
        return [(start, end)]
    next_line_end = text.find("\n", end)
    rest_of_line = text[end : len(text) if next_line_end < 0 else next_line_end]
    line_start = text.rfind("\n", 0, start) + 1
    own_line = _LINE_LEAD.fullmatch(text, line_start, start) is not None
    if rest_of_line.strip(" \t.,;") and not _NEW_ITEM.match(text, newline + 1) and not own_line:
        return [(start, end)]
    pieces = [(start, start + len(text[start:newline].rstrip()))]
    for line in _LINE.finditer(text[newline:end]):
        words = _NAME_WORD.findall(line.group())
        if len(words) >= 2 or any(_folded(word) in given_names() for word in words):
            offset = newline + line.start()
            pieces.append((offset + len(line.group()) - len(line.group().lstrip(" \t-*•–")), newline + line.end()))
    return pieces


#: A capitalized word and "&" just before a name ("Ernst & Young"), or "&" and a word after it.
_AMPERSAND_BEFORE = regex.compile(r"(\p{Lu}[\p{L}'’.-]*)\s*&\s*\Z")
_AMPERSAND_AFTER = regex.compile(r"\s*&\s*(\p{Lu}[\p{L}'’.-]*)")


def _names_something_else(text: str, start: int, end: int, person_ends: set[int], address_ends: set[int]) -> bool:
    span = text[start:end]
    if _organization(span):
        return True
    before = text[max(0, start - 40) : start]
    if _ORG_BEFORE.search(before) or _ORG_AFTER.match(text, end) or _after_thing_field(text, start):
        return True
    if " " not in span and (_TRAVEL_BEFORE.search(before) or _after_in(text, start)):
        return not text.startswith(("'s", "’s"), end)
    if " " not in span:
        left, right = _AMPERSAND_BEFORE.search(before), _AMPERSAND_AFTER.match(text, end)
        if (left and _firm_of_partners(left.group(1), span)) or (right and _firm_of_partners(span, right.group(1))):
            return True
    after_name = _FROM_AFTER_NAME.search(before)
    if after_name is not None and start - (len(before) - after_name.start()) in person_ends:
        return True
    return " " not in span and any(
        end_ < start and _ADDRESS_TO_CITY.fullmatch(text, end_, start) for end_ in address_ends
    )
