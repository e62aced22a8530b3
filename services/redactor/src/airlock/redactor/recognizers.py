"""The recognizers a policy needs, built for one process-wide NLP engine, all offline.

Only the recognizers that report an entity type the policy looks for are built: every
recognizer costs a scan of every text. Presidio's own recognizers are used where they are
good; a few are replaced:

* e-mail: validates domains against the public-suffix snapshot bundled with ``tldextract``
  (Presidio's asks ``tldextract``, which downloads the list on first use);
* cards: also knows Mastercard's 2-series (2221–2720), which Presidio's pattern omits;
* phones: regions and leniency come from the policy;
* street addresses: Presidio has none for English; ours is a USPS-suffix pattern;
* the policy's own regex recognizers and deny lists.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import inspect
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import phonenumbers
import regex
import tldextract
import tldextract.tldextract
from presidio_analyzer import EntityRecognizer, LocalRecognizer, Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer import predefined_recognizers as predefined
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    PhoneRecognizer,
    SpacyRecognizer,
)

from airlock.redactor.policy import Policy


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Uses only the public-suffix snapshot shipped inside the tldextract package.
OFFLINE_SUFFIXES = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def make_tldextract_offline() -> None:
    """Point ``tldextract.extract`` (used by any library in this process) at the bundled snapshot."""
    tldextract.tldextract.TLD_EXTRACTOR = OFFLINE_SUFFIXES


class OfflineEmailRecognizer(EmailRecognizer):  # type: ignore[misc]
    """Presidio's email recognizer, validating domains against the bundled suffix list."""

    def validate_result(self, pattern_text: str) -> bool:
        """True when the address ends in a known public suffix."""
        return OFFLINE_SUFFIXES(pattern_text.rsplit("@", 1)[-1]).fqdn != ""


class CardRecognizer(CreditCardRecognizer):  # type: ignore[misc]
    """Card numbers (Luhn-checked), including Mastercard's 2-series."""

    PATTERNS = [  # noqa: RUF012 (Presidio's own class attribute, overridden)
        Pattern(
            "Card number (Luhn)",
            r"\b(?!1\d{12}(?!\d))((4\d{3})|(5[0-5]\d{2})|(2[2-7]\d{2})|(6\d{3})|(1\d{3})|(3\d{3}))"
            r"[- ]?(\d{3,4})[- ]?(\d{3,4})[- ]?(\d{3,5})\b",
            0.3,
        ),
        # 12–19 digits in any grouping (Maestro, 19-digit Visa, Diners typed in fours).
        Pattern("Card number, any grouping (Luhn)", r"\b[2-6]\d{3}(?:[- ]?\d){8,15}\b", 0.3),
    ]

    def __init__(self) -> None:
        super().__init__(patterns=self.PATTERNS, name="CardRecognizer")


#: USPS Publication 28, appendix C1: street suffixes (primary names and common abbreviations).
STREET_SUFFIXES = _words(
    "Alley Aly Anex Annex Arcade Arc Avenue Ave Av Bayou Byu Beach Bch Bend Bnd Bluff Blf Bluffs Blfs "
    "Bottom Btm Boulevard Blvd Branch Br Bridge Brg Brook Brk Brooks Brks Burg Bg Burgs Bgs Bypass Byp "
    "Camp Cp Canyon Cyn Cape Cpe Causeway Cswy Center Ctr Centers Ctrs Circle Cir Circles Cirs Cliff Clf "
    "Cliffs Clfs Club Clb Common Cmn Commons Cmns Corner Cor Corners Cors Course Crse Court Ct Courts Cts "
    "Cove Cv Coves Cvs Creek Crk Crescent Cres Crest Crst Crossing Xing Crossroad Xrd Crossroads Xrds "
    "Curve Curv Dale Dl Dam Dm Divide Dv Drive Dr Drives Drs Estate Est Estates Ests Expressway Expy "
    "Extension Ext Extensions Exts Fall Falls Fls Ferry Fry Field Fld Fields Flds Flat Flt Flats Flts "
    "Ford Frd Fords Frds Forest Frst Forge Frg Forges Frgs Fork Frk Forks Frks Fort Ft Freeway Fwy "
    "Garden Gdn Gardens Gdns Gateway Gtwy Glen Gln Glens Glns Green Grn Greens Grns Grove Grv Groves Grvs "
    "Harbor Hbr Harbors Hbrs Haven Hvn Heights Hts Highway Hwy Hill Hl Hills Hls Hollow Holw Inlet Inlt "
    "Island Is Islands Iss Isle Junction Jct Junctions Jcts Key Ky Keys Kys Knoll Knl Knolls Knls Lake Lk "
    "Lakes Lks Land Landing Lndg Lane Ln Light Lgt Lights Lgts Loaf Lf Lock Lck Locks Lcks Lodge Ldg Loop "
    "Mall Manor Mnr Manors Mnrs Meadow Mdw Meadows Mdws Mews Mill Ml Mills Mls Mission Msn Motorway Mtwy "
    "Mount Mt Mountain Mtn Mountains Mtns Neck Nck Orchard Orch Oval Overpass Opas Park Parks Parkway Pkwy "
    "Parkways Pass Passage Psge Path Pike Pine Pne Pines Pnes Place Pl Plain Pln Plains Plns Plaza Plz "
    "Point Pt Points Pts Port Prt Ports Prts Prairie Pr Radial Radl Ramp Ranch Rnch Rapid Rpd Rapids Rpds "
    "Rest Rst Ridge Rdg Ridges Rdgs River Riv Road Rd Roads Rds Route Rte Row Rue Run Shoal Shl Shoals Shls "
    "Shore Shr Shores Shrs Skyway Skwy Spring Spg Springs Spgs Spur Spurs Square Sq Squares Sqs Station Sta "
    "Stravenue Stra Stream Strm Street St Streets Sts Summit Smt Terrace Ter Throughway Trwy Trace Trce "
    "Track Trak Trafficway Trfy Trail Trl Trailer Trlr Tunnel Tunl Turnpike Tpke Underpass Upas Union Un "
    "Unions Uns Valley Vly Valleys Vlys Viaduct Via Vw View Views Vws Village Vlg Villages Vlgs Ville Vl "
    "Vista Vis Walk Walks Wall Way Ways Well Wl Wells Wls"
)

_STREET_WORD = r"(?:[A-Z][A-Za-z'’.-]*|\d{1,3}(?:st|nd|rd|th))"
STREET_ADDRESS_REGEX = (
    r"\b\d{1,6}[A-Z]?(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\.?)?"
    rf"(?:\s+{_STREET_WORD}){{1,4}}?\s+(?:{'|'.join(sorted(set(STREET_SUFFIXES), key=len, reverse=True))})\b\.?"
    r"(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\b\.?)?"
    r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Floor|Fl|Room|Rm|Bldg|Building)\.?\s*#?\s*[A-Za-z0-9-]{1,8}\b"
    r"|,?\s+#\s*[A-Za-z0-9-]{1,8}\b)?"
)


class StreetAddressRecognizer(PatternRecognizer):  # type: ignore[misc]
    """House number, a capitalized street name and a USPS suffix, with an optional unit."""

    def __init__(self) -> None:
        super().__init__(
            supported_entity="STREET_ADDRESS",
            name="StreetAddressRecognizer",
            patterns=[Pattern("Street address (USPS suffix)", STREET_ADDRESS_REGEX, 0.6)],
            context=["address", "street", "ship", "deliver", "lives", "home", "mail"],
            global_regex_flags=re.MULTILINE,  # names are capitalized: case matters
        )


class PhoneShapeRecognizer(PatternRecognizer):  # type: ignore[misc]
    """Digit groups shaped like a phone number, whether or not the prefix is assigned.

    ``phonenumbers`` (behind Presidio's recognizer) only accepts numbers whose area code is
    in its metadata; a mistyped, new or made-up prefix is still a phone number to a reader.
    """

    PATTERNS: ClassVar[list[Pattern]] = [
        Pattern(
            "North American shape",
            r"(?<![\w+.-])(?:(?:\+1|001)[-. ]?)?(?:\(\d{3}\)\s?|\d{3}[-. ])\d{3}[-. ]\d{4}"
            r"(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![\w-])",
            0.4,
        ),
        # Ten or eleven bare digits are a phone number only with a context word ("call", "phone").
        Pattern("Bare digits", r"(?<![\w+.-])0?\d{10}(?![\w-])", 0.1),
        Pattern(
            "International shape",
            # A bracket belongs to the number only with its pair: "(+44 20 7946 0000)" keeps its ")".
            r"(?<![\w+])\+\d{1,3}(?:\s?\(0\))?(?:[-. ]?(?:\(\d{1,5}\)|\d{1,5})){2,5}(?![\w-])",
            0.4,
        ),
    ]

    def __init__(self) -> None:
        super().__init__(
            supported_entity="PHONE_NUMBER",
            name="PhoneShapeRecognizer",
            patterns=self.PATTERNS,
            context=list(PhoneRecognizer.CONTEXT),
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        """Between 7 and 15 digits, not counting an extension (the ITU E.164 range)."""
        digits = re.sub(r"\D", "", re.split(r"x|ext", pattern_text)[0])
        return None if 7 <= len(digits) <= 15 else False


#: A capitalized given name or surname (any script's letters, hyphens, apostrophes, "O'Brien").
_NAME = r"(?:\p{Lu}['’])?\p{Lu}\p{Ll}+(?:[-'’]\p{Lu}?\p{Ll}+)*"
_PARTICLE = r"(?:van|von|de|da|der|den|di|del|le|la|du|dos|bin|al)"
_FULL_NAME = rf"{_NAME}(?:\s+{_PARTICLE}){{0,2}}\s+{_NAME}"
#: Verbs whose subject is a person, as they appear in tickets and notes.
_PERSON_VERBS = (
    "wrote|writes|said|says|called|calls|asked|asks|reports|reported|paid|pays|emailed|requested|requests|"
    "complained|confirmed|joined|cannot|can't|still|is leaving|left|approved|signed|submitted|visited"
)


class PersonContextRecognizer(LocalRecognizer):  # type: ignore[misc]
    """Names the NER model misses where the words around them leave no doubt.

    A greeting or sign-off ("Hello Mary", "Thanks, Jane"); a role noun before a name
    ("customer Jane Roe", "engineer Kaja Pyrkosz", "Dr. Roe"); a full name followed by a
    contact in parentheses ("Jane Roe (jane@…", "Jane Roe (+44 …"), by a possessive
    ("Jane Roe's laptop"), by a verb whose subject is a person ("Jane Roe wrote"), by a
    contact detail ("Jane Roe, phone …") or by "from" and a name ("Jane Roe from Initech");
    and the words of an e-mail address's ``first.last`` part where they appear capitalized.
    """

    SCORE = 0.6
    _PATTERNS = tuple(
        regex.compile(pattern)
        for pattern in (
            r"\b(?:Hi|Hello|Hey|Dear|Thanks|Thank you|Cheers|Regards|Attn|Attention)[,:]?"
            rf"\s+({_NAME}(?:\s+{_NAME})?)\b",
            r"\b(?:[Cc]ustomer|[Cc]lient|[Uu]ser|[Ee]mployee|[Cc]andidate|[Cc]ardholder|[Ee]ngineer|[Mm]anager|"
            r"[Cc]ontact(?:\s+for)?|[Cc]olleague|[Pp]atient|[Aa]pplicant|[Cc]aller|[Rr]equester|[Aa]ssignee|"
            r"[Rr]eporter|[Bb]eneficiary|[Pp]ayee)"
            rf"[,:]?\s+({_FULL_NAME})\b",
            rf"\b(?:Mr|Mrs|Ms|Mx|Dr|Prof)\.?\s+({_NAME}(?:\s+{_NAME})?)\b",
            rf"\b({_FULL_NAME})\s*\((?=[^()\n]{{0,80}}?(?:@|\+?\d[\d ().-]{{6,}}))",
            rf"\b({_FULL_NAME})['’]s\b",
            rf"\b({_FULL_NAME})\s+(?:{_PERSON_VERBS})\b",
            # A full name followed by a contact detail, or by "from" and an organization or place.
            rf"\b({_FULL_NAME}),?\s+(?:phone|tel|mobile|cell|e-?mail)\b",
            rf"\b({_FULL_NAME})\s+from\s+(?:the\s+)?\p{{Lu}}",
            rf"\b(?:from|by|for|to)\s+({_FULL_NAME})(?=\s*[;,:]|\.(?:\s|$)|\s+in\s+\p{{Lu}})",
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
        for match in self._EMAIL_LOCAL.finditer(text):
            first, last = regex.escape(match.group(1).capitalize()), regex.escape(match.group(2).capitalize())
            whole = regex.compile(rf"\b{first}(?:\s+{_NAME})?\s+{last}\b|\b{first}\b")
            spans.update(found.span() for found in whole.finditer(text))
        return _person_results(
            self,
            [
                span
                for span in sorted(spans)
                if not _stop_word(text[slice(*span)]) and not _organization(text[slice(*span)])
            ],
        )


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


#: Given names that are as often a word, a month, a place, a nationality or a product as a
#: person ("May", "Will", "Jordan", "Victoria", "German", "Julia"): the gazetteer leaves them to
#: the NER model and the context patterns, which see more than the word itself.
_AMBIGUOUS_GIVEN_NAMES = _words(
    "january february march april may june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday "
    "german english french spanish italian dutch polish portuguese irish danish swiss norman "
    "paris london berlin jordan india china israel georgia virginia victoria florence adelaide austin "
    "dallas houston chelsea madison sydney phoenix savannah aurora brooklyn lincoln washington jackson "
    "orlando regina charlotte santiago lorraine kenya chad jersey vienna geneva milan sofia lima valencia "
    "alexandria troy salem eugene denver tyrone carolina dakota montana nevada cuba peru sierra "
    "will mark grace amber hope faith joy rose iris lily ivy jade ruby pearl crystal dawn summer autumn "
    "winter river sky storm rain bill pat sue art bob rob jack frank earl guy max miles chase hunter "
    "carter mason cash bishop king prince duke major sterling wade dean gene ray don victor sunny lane "
    "glen dale page drew gray grey brook bay clay cliff rocky stone forest holly heather daisy violet "
    "olive ginger candy honey precious destiny harmony melody patience charity trinity unity liberty "
    "justice royal angel happy lucky silver star bella rich young long cloud price nova echo "
    "julia ada alexa siri django watson mercedes chanel dell ford harley fedora claude sage "
    "blue brown green white black bright blessed diamond delta alpha beta case chance comfort constant day "
    "deep disney channel corona america africa asia europe france ireland italia argentina armenia chile brazil "
    "bolivia colombia panama guinea niger mali togo oman qatar samoa tonga fiji malta cyprus lebanon syria "
    "yemen nepal laos burma japan korea iran iraq egypt libya sudan ghana benin gabon zambia angola uganda "
    "rwanda somalia eritrea austria belgium denmark england scotland wales poland romania hungary serbia "
    "croatia bosnia albania macedonia bulgaria ukraine russia latvia lithuania estonia finland norway sweden "
    "iceland holland germany spain portugal greece turkey canada mexico ecuador honduras belize jamaica haiti"
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
    _CUE_AFTER = regex.compile(
        rf"(?:['’]s\b|,?[ \t]+(?:{_PERSON_VERBS}|will|has|had|is|was|and\s+I|mentioned|noted)\b)"
    )
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
        hits = [m for m in self._CANDIDATE.finditer(text) if _folded(m.group(1)) in names]
        if not hits:
            return []
        not_person = set(_labelled_spans(nlp_artifacts, _NOT_PERSON_LABELS, words=1))
        spans: list[tuple[int, int]] = []
        alone: list[tuple[int, int]] = []
        for hit in hits:
            start, end = hit.span()
            if (start, end) in not_person:
                continue
            before = text[max(0, start - self._LEFT_WINDOW) : start]
            surname = self._SURNAME.match(text, end)
            if surname is not None and _folded(surname.group().split()[-1]) not in _AMBIGUOUS_GIVEN_NAMES:
                if not self._after_other_capitalized(before) and not self._names_organization(text, surname.end()):
                    spans.append((start, surname.end()))
                continue
            if (
                self._CUE_BEFORE.search(before)
                or self._CUE_AFTER.match(text, end)
                or (self._OWN_LINE.search(before) and self._LINE_END.match(text, end))
                or (before.rstrip().endswith(",") and self._LINE_END.match(text, end))
            ):
                spans.append((start, end))
            else:
                alone.append((start, end))
        spans += self._listed_with(text, spans, alone)
        return _person_results(self, sorted(spans))

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
        people = sorted(found)
        added: list[tuple[int, int]] = []
        changed = True
        while changed and alone:
            changed = False
            for span in list(alone):
                start, end = span
                if any(
                    self._LIST_GLUE.fullmatch(text, b_end, start) or self._LIST_GLUE.fullmatch(text, end, b_start)
                    for b_start, b_end in people
                    if b_end <= start or end <= b_start
                ):
                    alone.remove(span)
                    people.append(span)
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
    return " " not in span.strip() and text[max(0, start - 4) : start] == " in "


class WindowedPhoneRecognizer(PhoneRecognizer):  # type: ignore[misc]
    """Presidio's ``phonenumbers`` recognizer, run only where the text has enough digits.

    ``phonenumbers`` scans the whole text once per region; most of a prompt has no digits at
    all. A cheap pattern finds the stretches that could hold a number (seven digits or more,
    with the separators numbers are written with) and the matcher runs on those alone, with
    a few characters of margin so its boundary checks see the same neighbours. Regions are
    tried in the policy's order until one's match covers every digit of the stretch (another
    region could only find the same number again), and a stretch that a checksum-validating
    recognizer already claimed (a card number, an IBAN) is not tried at all.
    """

    _CANDIDATE = re.compile(r"[+(]?\d[\d \t().\-/]{5,}\d")
    #: Digit runs that are never phone numbers: IPv4 addresses, ISO dates, amounts with cents.
    _NOT_A_NUMBER = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}|\d{4}-\d{2}-\d{2}|\d{1,3}(?:,\d{3})*\.\d{2}")
    _MARGIN = 3

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        """Phone numbers in the digit-bearing windows of ``text``."""
        return self.analyze_unclaimed(text, entities, ())

    def analyze_unclaimed(
        self, text: str, entities: list[str], claimed: Sequence[tuple[int, int]]
    ) -> list[RecognizerResult]:
        """Phone numbers in the digit-bearing windows of ``text`` outside the ``claimed`` spans."""
        if "PHONE_NUMBER" not in entities:
            return []
        results: list[RecognizerResult] = []
        for candidate in self._CANDIDATE.finditer(text):
            if sum(char.isdigit() for char in candidate.group()) < 7:
                continue
            if self._NOT_A_NUMBER.fullmatch(candidate.group().strip()):
                continue
            if candidate.start() > 0 and text[candidate.start() - 1].isalpha():
                continue  # glued to letters: an identifier ("INC1234567"), not a number
            if any(start <= candidate.start() and candidate.end() <= end for start, end in claimed):
                continue
            start = max(0, candidate.start() - self._MARGIN)
            window = text[start : candidate.end() + self._MARGIN]
            for found in self._numbers(window, candidate.start() - start, candidate.end() - start):
                found.start += start
                found.end += start
                results.append(found)
        return EntityRecognizer.remove_duplicates(results)  # type: ignore[no-any-return]

    def _numbers(self, window: str, first: int, last: int) -> list[RecognizerResult]:
        """Matches in ``window`` whose digits run from ``first`` to ``last`` (exclusive)."""
        # An international number parses the same in every region: try one.
        regions = self.supported_regions[:1] if window.lstrip(" \t(").startswith("+") else self.supported_regions
        while not window[first].isdigit():
            first += 1
        while not window[last - 1].isdigit():
            last -= 1
        leniency = phonenumbers.Leniency.VALID if self.leniency is None else self.leniency
        results: list[RecognizerResult] = []
        for region in regions:
            covered = False
            for match in phonenumbers.PhoneNumberMatcher(window, region, leniency=leniency):
                results.append(self._get_recognizer_result(match, window, region, None))
                covered = covered or (match.start <= first and match.end >= last)
            if covered:
                break
        return results


def _phone_recognizer(policy: Policy) -> PhoneRecognizer:
    leniency = {"possible": phonenumbers.Leniency.POSSIBLE, "valid": phonenumbers.Leniency.VALID}
    return WindowedPhoneRecognizer(
        supported_regions=tuple(policy.phone.regions),
        leniency=leniency[policy.phone.leniency],
        name="PhoneRecognizer",
    )


def _custom(policy: Policy) -> Iterable[EntityRecognizer]:
    for spec in policy.recognizers:
        yield PatternRecognizer(
            supported_entity=spec.entity,
            name=spec.name,
            patterns=[
                Pattern(p.name or f"{spec.name}#{index}", p.regex, p.score) for index, p in enumerate(spec.patterns, 1)
            ],
            context=spec.context,
            global_regex_flags=re.MULTILINE,
        )
    for entity, values in policy.deny_list.items():
        yield PatternRecognizer(supported_entity=entity, name=f"DenyList[{entity}]", deny_list=values)


_DIGIT = re.compile(r"\d")
#: Recognizers (by name) that can only match a text containing one of these characters: a
#: prompt without a digit skips every number recognizer, one without ``@`` the e-mail one.
_GATES: dict[str, re.Pattern[str]] = {
    **dict.fromkeys(
        (
            "PhoneRecognizer",
            "PhoneShapeRecognizer",
            "CardRecognizer",
            "UsSsnRecognizer",
            "UsItinRecognizer",
            "UsPassportRecognizer",
            "NhsRecognizer",
            "UsBankRecognizer",
            "IbanRecognizer",
            "UkNinoRecognizer",
            "StreetAddressRecognizer",
            "AuAbnRecognizer",
            "AuAcnRecognizer",
            "AuTfnRecognizer",
            "AuMedicareRecognizer",
            "InPanRecognizer",
            "InAadhaarRecognizer",
            "InVehicleRegistrationRecognizer",
            "InVoterRecognizer",
            "InPassportRecognizer",
            "SgFinRecognizer",
            "EsNifRecognizer",
            "EsNieRecognizer",
            "ItFiscalCodeRecognizer",
            "ItDriverLicenseRecognizer",
            "ItVatCodeRecognizer",
            "ItPassportRecognizer",
            "ItIdentityCardRecognizer",
            "PlPeselRecognizer",
            "FiPersonalIdentityCodeRecognizer",
            "UsLicenseRecognizer",
            "AbaRoutingRecognizer",
            "CaSinRecognizer",
            "UsNpiRecognizer",
            "PhTinRecognizer",
            "PhUmidRecognizer",
        ),
        _DIGIT,
    ),
    "OfflineEmailRecognizer": re.compile("@"),
    "IpRecognizer": re.compile(r"[\d:]"),
}


def gate_of(recognizer: EntityRecognizer) -> re.Pattern[str] | None:
    """A pattern a text must contain for ``recognizer`` to find anything in it (``None``: no such test).

    Only Presidio's and our own recognizers known to need a digit (or ``@``) have one; a
    policy's custom recognizers and deny lists always run.
    """
    if type(recognizer).__module__.startswith(("presidio_analyzer", __name__)) and not isinstance(
        recognizer, (SpacyRecognizer, PersonContextRecognizer, GivenNameRecognizer)
    ):
        return _GATES.get(type(recognizer).__name__)
    return None


class UnsupportedEntity(ValueError):
    """A policy asks for an entity type that no recognizer reports."""


#: Ours first: where one of ours reports a type, Presidio's recognizer of that type is not used.
_OURS: tuple[type[EntityRecognizer], ...] = (OfflineEmailRecognizer, CardRecognizer, StreetAddressRecognizer)
#: Presidio classes that need an NLP engine, a remote service or an optional package.
_NOT_STANDALONE = {"SpacyRecognizer", "StanzaRecognizer", "TransformersRecognizer", "PhoneRecognizer"}


@functools.cache
def _catalogue() -> dict[str, type[EntityRecognizer]]:
    """Entity type → the pattern recognizer class that reports it (ours, then Presidio's)."""
    catalogue: dict[str, type[EntityRecognizer]] = {}
    candidates: list[type[EntityRecognizer]] = list(_OURS)
    for name in predefined.__all__:
        cls = getattr(predefined, name)
        if inspect.isclass(cls) and issubclass(cls, LocalRecognizer) and name not in _NOT_STANDALONE:
            candidates.append(cls)
    for cls in candidates:
        try:
            entities = cls().supported_entities  # type: ignore[call-arg]
        except Exception:  # noqa: S112 (needs an optional package or a remote endpoint: not ours to use)
            continue
        for entity in entities:
            catalogue.setdefault(entity, cls)
    return catalogue


def supported_entities() -> list[str]:
    """Every entity type a policy can ask for without a custom recognizer."""
    return sorted({*_catalogue(), "PHONE_NUMBER", *NER_TYPES})


#: Types the spaCy NER model reports (through Presidio's mapping).
NER_TYPES = ("PERSON", "LOCATION", "ORGANIZATION", "NRP", "DATE_TIME")


def recognizers_for(policy: Policy) -> list[EntityRecognizer]:
    """The recognizers reporting the entity types ``policy`` looks for, and no others.

    Raises:
        UnsupportedEntity: An entity type the policy masks, redacts or blocks has no recognizer.
    """
    wanted = set(policy.detected)
    chosen: list[EntityRecognizer] = list(_custom(policy))
    covered = {e for r in chosen for e in r.supported_entities}
    if ner := [e for e in NER_TYPES if e in wanted]:
        chosen.append(NerPersonRecognizer(supported_entities=ner, name="SpacyRecognizer"))
    if "PERSON" in wanted:
        chosen += [PersonContextRecognizer(), GivenNameRecognizer()]
    if "PHONE_NUMBER" in wanted:
        chosen += [_phone_recognizer(policy), PhoneShapeRecognizer()]
    catalogue = _catalogue()
    classes = {catalogue[e] for e in wanted if e in catalogue}
    for cls in sorted(classes, key=lambda c: c.__name__):
        recognizer = cls()  # type: ignore[call-arg]
        # Only the types the policy wants: a recognizer may report several.
        recognizer.supported_entities = [e for e in recognizer.supported_entities if e in wanted]
        chosen.append(recognizer)
    covered |= {e for r in chosen for e in r.supported_entities}
    if missing := sorted(wanted - covered):
        raise UnsupportedEntity(
            f"policy {policy.label}: no recognizer reports {', '.join(missing)} "
            "(add a custom recognizer or a deny list for it, or allow it)"
        )
    return chosen


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
#: What follows an organization's name: a legal form ("Initech Ltd"), a possession only an
#: organization has ("Initech's platform"), a part of an organization ("the Rotterdam office").
_ORG_AFTER = regex.compile(
    rf"(?:,?\s+(?:{_LEGAL_FORM})(?![\p{{L}}\p{{N}}])"
    r"|\s*&\s*(?:Co|Cie|Sons?|Partners?|Associates|Brothers|Bros)\b"
    r"|['’]s\s+(?:platform|API|website|web\s+site|app|portal|headquarters|HQ|CEO|CFO|CTO|board|shareholders|stock|"
    r"shares|revenue|brand|servers?|data\s+cent(?:er|re)s?|tenant|subsidiar(?:y|ies)|customers|employees|"
    r"offices?|branch(?:es)?|products?|services|stores?|firmware|software|support|licen[cs]es?|pricing|"
    r"terms|contracts?|invoices?|quotes?|offers?|proposals?|devices|laptops|plants?|factor(?:y|ies)|"
    r"warehouses?|stores|outage|acquisition|merger|earnings|annual\s+report|auditors?)\b"
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
    r"replac(?:e|ed|es|ing)|via|using|into)[,:]?\s+)\Z",
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
    # Spans a cue (a greeting, a role, a verb) found: a person, not a company named after one.
    cued = {(r.start, r.end) for r in persons if r.recognition_metadata[name_key] != "SpacyRecognizer"}
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
            if known and not (given and " " not in span):
                # "Morgan Stanley" is a bank; "Cassandra" alone may be a person (below).
                if _PERSON_RIGHT_BEFORE.search(text, max(0, start - 12), start):
                    _keep_piece(kept, person, start, end)
                else:
                    organizations.append((start, end))
                continue
            # Weak cues decide for a single word that is not a given name ("Hoffmann"), a known
            # product that is also one ("Cassandra"), or what the model calls an organization.
            weak = known or (not given and (" " not in span or _inside(start, end, labelled_org)))
            if weak and _ORG_BEFORE_UNLESS_GIVEN.search(text[max(0, start - 60) : start]):
                organizations.append((start, end))
                continue
            if weak or (" " not in span and (start, end) not in cued):
                undecided.append((person, start, end, known))
                continue
            _keep_piece(kept, person, start, end)
    # A piece listed with an organization is one too ("Moreau SA, Jansen and Kowalski"), and a
    # product that is also a given name is one next to another product ("from Hudson to Jenkins").
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


def _keep_piece(kept: list[RecognizerResult], person: RecognizerResult, start: int, end: int) -> None:
    piece = copy.copy(person)
    piece.start, piece.end = start, end
    kept.append(piece)


def _labelled_spans(nlp_artifacts: Any, labels: frozenset[str], *, words: int | None = None) -> list[tuple[int, int]]:
    """Offsets of the entities the NER model gave one of ``labels`` (only those of ``words`` tokens, if given)."""
    doc = getattr(nlp_artifacts, "tokens", None)
    if doc is None or not hasattr(doc, "ents"):
        return []
    return [
        (ent.start_char, ent.end_char)
        for ent in doc.ents
        if ent.label_ in labels and (words is None or len(ent) == words)
    ]


def _inside(start: int, end: int, spans: Iterable[tuple[int, int]]) -> bool:
    return any(outer_start <= start and end <= outer_end for outer_start, outer_end in spans)


def _name_pieces(text: str, start: int, end: int) -> list[tuple[int, int]]:
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


#: A capitalized word and "&" just before a name ("Ernst & Young"), or "&" and a word after it.
_AMPERSAND_BEFORE = regex.compile(r"(\p{Lu}[\p{L}'’.-]*)\s*&\s*\Z")
_AMPERSAND_AFTER = regex.compile(r"\s*&\s*(\p{Lu}[\p{L}'’.-]*)")


def _names_something_else(text: str, start: int, end: int, person_ends: set[int], address_ends: set[int]) -> bool:
    span = text[start:end]
    if _organization(span):
        return True
    before = text[max(0, start - 40) : start]
    if _ORG_BEFORE.search(before) or _ORG_AFTER.match(text, end):
        return True
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
