"""A labeled evaluation set for PII redaction, generated from templates and Faker.

Each :class:`Sample` is a realistic enterprise prompt (support ticket, HR note, payment,
incident report, or a plain question with no PII) together with the personal values planted
in it and words that must survive redaction because they make the prompt useful without
identifying anyone (organizations, products, places on their own, nationalities, languages,
dates, amounts). The set is deterministic for a seed, so figures are comparable between runs.

The generator is deliberately varied rather than friendly: names come from ten locales,
phone numbers in each locale's formats (Faker's US numbers often have unassigned area codes),
cards from every Faker brand (including Mastercard's 2-series), IBANs with and without
spaces, IPv4 and IPv6 addresses, US and UK national ids.
"""

from __future__ import annotations

import json
import random
import re
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Categories whose leakage target is the stricter one (≤ 0.5%).
STRUCTURED = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "NATIONAL_ID", "IBAN_CODE", "IP_ADDRESS")
#: Every PII category the generator plants.
PII_CATEGORIES = ("PERSON", *STRUCTURED, "BANK_ACCOUNT", "STREET_ADDRESS")
#: Categories of words that must survive.
KEEP_CATEGORIES = ("ORGANIZATION", "PRODUCT", "CITY", "COUNTRY", "NATIONALITY", "LANGUAGE", "DATE", "AMOUNT", "TERM")

KINDS = ("support_ticket", "hr_note", "payment", "incident_report", "question")

#: Locales names, phones and IBANs are drawn from, with their weights.
LOCALES = {
    "en_US": 5,
    "en_GB": 3,
    "de_DE": 2,
    "fr_FR": 2,
    "es_ES": 1,
    "it_IT": 1,
    "nl_NL": 1,
    "pl_PL": 1,
    "pt_BR": 1,
    "en_IN": 1,
}

ORGANIZATIONS = (
    "Northwind Traders",
    "Contoso",
    "Globex Corporation",
    "Initech",
    "Fabrikam",
    "Tailspin Toys",
    "Acme Logistics",
    "Blue Yonder Airlines",
    "Litware Inc.",
    "Adventure Works",
    "Wide World Importers",
    "Proseware",
    "the European Central Bank",
    "Deutsche Bahn",
    "Siemens",
    "Accenture",
    "the IRS",
    "HMRC",
)
PRODUCTS = (
    "Jira",
    "Salesforce",
    "SAP S/4HANA",
    "Excel",
    "Outlook",
    "ThinkPad X1 Carbon",
    "iPhone 15",
    "Kubernetes",
    "PostgreSQL",
    "Zoom",
    "Slack",
    "ServiceNow",
    "Tableau",
    "Workday",
    "Okta",
    "GitHub Enterprise",
    "Windows 11",
    "Teams",
)
CITIES = (
    "Berlin",
    "Chicago",
    "Lyon",
    "Osaka",
    "Toronto",
    "Madrid",
    "Rotterdam",
    "Krakow",
    "Austin",
    "Manchester",
    "Milan",
    "Dublin",
    "Singapore",
    "Seattle",
    "Munich",
    "Boston",
)
COUNTRIES = (
    "France",
    "Germany",
    "Brazil",
    "Japan",
    "Canada",
    "Spain",
    "Poland",
    "India",
    "Mexico",
    "the Netherlands",
    "Ireland",
    "Portugal",
    "Italy",
    "Sweden",
)
NATIONALITIES = ("German", "Brazilian", "Japanese", "Canadian", "French", "Polish", "Indian", "Irish", "Mexican")
LANGUAGES = ("Spanish", "Portuguese", "German", "Mandarin", "French", "Japanese", "Italian", "Dutch")

# The held-out vocabulary: none of it is in the default policy's allow list, and nothing in the
# redactor was tuned on it (see ``SPLITS``).
HOLDOUT_ORGANIZATIONS = (
    "Hooli",
    "Vandelay Industries",
    "Umbrella Corporation",
    "Soylent",
    "Massive Dynamic",
    "Dunder Mifflin",
    "Oscorp",
    "Stark Industries",
    "Cyberdyne Systems",
    "Wayne Enterprises",
    "Pied Piper",
    "Aperture Science",
    "Maersk",
    "Vodafone",
    "Allianz",
    "Barclays",
    "Deloitte",
    "Lufthansa",
    "Santander",
    "Infosys",
    "the World Health Organization",
    "Banco do Brasil",
)
HOLDOUT_PRODUCTS = (
    "Miro",
    "Canva",
    "Loom",
    "Grammarly",
    "Pipedrive",
    "Freshdesk",
    "Xero",
    "Coupa",
    "Guidewire",
    "Mailchimp",
    "Calendly",
    "Smartsheet",
    "Sage 50",
    "Lenovo Yoga",
    "Galaxy S24",
    "Surface Pro",
)
HOLDOUT_CITIES = (
    "Lisbon",
    "Porto",
    "Gdansk",
    "Valencia",
    "Eindhoven",
    "Bangalore",
    "Denver",
    "Leeds",
    "Marseille",
    "Hamburg",
    "Turin",
    "Cork",
    "Atlanta",
    "Calgary",
    "Curitiba",
    "Pune",
)
# The second tuning vocabulary (``tune`` split): written after the dev split was saturated, so
# that new heuristics are developed on text they were not shaped by; the held-out split still
# judges them.
TUNE_ORGANIZATIONS = (
    "Umbrella Health",
    "Vandelay Industries",
    "Hooli",
    "Pied Piper",
    "Massive Dynamic",
    "Cyberdyne Systems",
    "Soylent Foods",
    "Unilever",
    "Maersk",
    "Rakuten",
    "Infosys",
    "Volvo Cars",
    "Philips",
    "Nestlé",
    "the World Health Organization",
    "the Bundesbank",
    "Lufthansa",
    "Telefónica",
)
TUNE_PRODUCTS = (
    "Confluence",
    "Snowflake",
    "Datadog",
    "Terraform",
    "Power BI",
    "MacBook Pro",
    "Pixel 8",
    "Dynamics 365",
    "Zendesk",
    "HubSpot",
    "Figma",
    "Notion",
    "Grafana",
    "Ansible",
    "Splunk",
    "Looker",
    "Asana",
    "Webex",
)
TUNE_CITIES = (
    "Lisbon",
    "Gdansk",
    "Nagoya",
    "Vancouver",
    "Bilbao",
    "Antwerp",
    "Leeds",
    "Denver",
    "Turin",
    "Cork",
    "Hamburg",
    "Porto",
    "Phoenix",
    "Auckland",
)

#: Legal forms by locale, for generated organization names ("Hoffmann GmbH", "Garcia LLC").
COMPANY_FORMS = {
    "en_US": ("Inc.", "LLC", "Group", "Corp."),
    "en_GB": ("Ltd", "PLC", "& Co."),
    "de_DE": ("GmbH", "AG", "KG"),
    "fr_FR": ("SA", "SARL", "SAS"),
    "nl_NL": ("B.V.", "N.V."),
    "es_ES": ("S.L.", "S.A."),
}


@dataclass(frozen=True)
class Vocabulary:
    """The must-survive words a split draws from.

    Attributes:
        organizations: Organization names.
        products: Product names.
        cities: City names.
        generated_org_share: Share of organizations made of a surname and a legal form instead.
    """

    organizations: tuple[str, ...]
    products: tuple[str, ...]
    cities: tuple[str, ...]
    generated_org_share: float = 0.0


# -- value generators ----------------------------------------------------------------------


def _luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _group(digits: str, sizes: tuple[int, ...], separator: str) -> str:
    parts, position = [], 0
    for size in sizes:
        parts.append(digits[position : position + size])
        position += size
    if position < len(digits):
        parts.append(digits[position:])
    return separator.join(p for p in parts if p)


#: UK National Insurance number prefix letters (HMRC never allocates D, F, I, Q, U, V first
#: or second, nor O second, nor the listed pairs).
_NINO_FIRST = [c for c in string.ascii_uppercase if c not in "DFIQUV"]
_NINO_SECOND = [c for c in string.ascii_uppercase if c not in "DFIQUVO"]
_NINO_BANNED = {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}


@dataclass
class _Person:
    first: str
    last: str
    locale: str

    @property
    def full(self) -> str:
        return f"{self.first} {self.last}"


@dataclass(frozen=True)
class Planted:
    """A personal value planted in a sample.

    Attributes:
        category: One of :data:`PII_CATEGORIES`.
        value: The exact text planted.
    """

    category: str
    value: str


@dataclass(frozen=True)
class Keep:
    """A word or phrase that must survive redaction.

    Attributes:
        category: One of :data:`KEEP_CATEGORIES`.
        value: The exact text.
    """

    category: str
    value: str


@dataclass(frozen=True)
class Sample:
    """One labeled prompt.

    Attributes:
        sample_id: Stable id within the set (``kind-number``).
        kind: One of :data:`KINDS`.
        text: The prompt.
        pii: Values that must not survive redaction.
        keep: Words that must survive redaction.
    """

    sample_id: str
    kind: str
    text: str
    pii: tuple[Planted, ...] = ()
    keep: tuple[Keep, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


class _Slots:
    """Values for one sample's template, drawn lazily and recorded as labels when used."""

    def __init__(self, rng: random.Random, fakers: dict[str, Any], vocabulary: Vocabulary) -> None:
        self._rng = rng
        self._fakers = fakers
        self._vocabulary = vocabulary
        self.pii: list[Planted] = []
        self.keep: list[Keep] = []
        self._people: list[_Person] = []
        self._cache: dict[str, str] = {}

    # -- helpers ------------------------------------------------------------------------------

    def _faker(self, locale: str | None = None) -> Any:
        if locale is None:
            locale = self._rng.choices(list(LOCALES), weights=list(LOCALES.values()))[0]
        return self._fakers[locale]

    def _plant(self, category: str, value: str) -> str:
        if Planted(category, value) not in self.pii:
            self.pii.append(Planted(category, value))
        return value

    def _keep(self, category: str, value: str) -> str:
        if Keep(category, value) not in self.keep:
            self.keep.append(Keep(category, value))
        return value

    def person(self, index: int) -> _Person:
        while len(self._people) <= index:
            faker = self._faker()
            first = faker.first_name()
            last = faker.last_name()
            if any(p.first == first or p.last == last for p in self._people):
                continue
            self._people.append(_Person(first, last, faker.locale if hasattr(faker, "locale") else "en_US"))
        return self._people[index]

    # -- slot values ------------------------------------------------------------------------

    def value(self, slot: str) -> str:
        """The value of ``slot`` (e.g. ``name``, ``email2``, ``city``); one per slot per sample."""
        if slot not in self._cache:
            self._cache[slot] = self._draw(slot)
        return self._cache[slot]

    def _draw(self, slot: str) -> str:
        match = re.fullmatch(r"([a-z_]+?)(\d?)", slot)
        assert match is not None, slot
        kind, number = match.group(1), int(match.group(2) or 1) - 1
        rng = self._rng
        if kind == "name":
            return self._plant("PERSON", self.person(number).full)
        if kind == "first":
            return self._plant("PERSON", self.person(number).first)
        if kind == "last":
            person = self.person(number)
            return self._plant("PERSON", person.last)
        if kind == "email":
            person = self.person(number)
            faker = self._faker("en_US")
            style = rng.random()
            if style < 0.4:
                local = f"{person.first}.{person.last}".lower()
                local = re.sub(r"[^a-z0-9.]", "", _ascii(local)) or faker.user_name()
                address = f"{local}@{faker.domain_name()}"
            elif style < 0.7:
                address = self._faker().free_email()
            else:
                address = faker.company_email()
            return self._plant("EMAIL_ADDRESS", address)
        if kind == "phone":
            return self._plant("PHONE_NUMBER", self._faker().phone_number())
        if kind == "card":
            faker = self._faker("en_US")
            digits = faker.credit_card_number()
            assert _luhn_ok(digits)
            style = rng.random()
            if style < 0.4:
                card = digits
            elif len(digits) == 15:
                card = _group(digits, (4, 6, 5), rng.choice(" -"))
            else:
                card = _group(digits, (4, 4, 4, 4), rng.choice(" -"))
            return self._plant("CREDIT_CARD", card)
        if kind == "ssn":
            return self._plant("NATIONAL_ID", self._faker("en_US").ssn())
        if kind == "nino":
            while True:
                prefix = rng.choice(_NINO_FIRST) + rng.choice(_NINO_SECOND)
                if prefix not in _NINO_BANNED:
                    break
            digits = "".join(rng.choice(string.digits) for _ in range(6))
            suffix = rng.choice("ABCD")
            if rng.random() < 0.5:
                nino = f"{prefix} {digits[:2]} {digits[2:4]} {digits[4:]} {suffix}"
            else:
                nino = f"{prefix}{digits}{suffix}"
            return self._plant("NATIONAL_ID", nino)
        if kind == "national_id":
            return self.value(f"{rng.choice(['ssn', 'nino'])}{number + 1}")
        if kind == "iban":
            faker = self._faker(rng.choice(["en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL"]))
            iban = faker.iban()
            if rng.random() < 0.5:
                iban = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
            return self._plant("IBAN_CODE", iban)
        if kind == "account":
            digits = "".join(rng.choice(string.digits) for _ in range(rng.choice([8, 9, 10, 12])))
            return self._plant("BANK_ACCOUNT", digits)
        if kind == "routing":
            return self._faker("en_US").aba()
        if kind == "ip":
            faker = self._faker("en_US")
            choice = rng.random()
            ip = faker.ipv4_public() if choice < 0.5 else faker.ipv4_private() if choice < 0.8 else faker.ipv6()
            return self._plant("IP_ADDRESS", ip)
        if kind == "address":
            return self._plant("STREET_ADDRESS", self._faker("en_US").street_address())
        if kind == "org":
            return self._keep("ORGANIZATION", self._organization())
        if kind == "product":
            return self._keep("PRODUCT", rng.choice(self._vocabulary.products))
        if kind == "city":
            return self._keep("CITY", rng.choice(self._vocabulary.cities))
        if kind == "country":
            return self._keep("COUNTRY", rng.choice(COUNTRIES))
        if kind == "nationality":
            return self._keep("NATIONALITY", rng.choice(NATIONALITIES))
        if kind == "language":
            return self._keep("LANGUAGE", rng.choice(LANGUAGES))
        if kind == "date":
            day = self._faker("en_US").date_between("-2y", "+60d")
            fmt = rng.choice(["%B %-d, %Y", "%Y-%m-%d", "%d %b %Y", "%-d %B"])
            return self._keep("DATE", day.strftime(fmt))
        if kind == "amount":
            value = rng.choice([12.5, 48.99, 120, 1250, 3400.75, 89000, 250000])
            currency = rng.choice(["${:,.2f}", "EUR {:,.2f}", "£{:,.2f}", "{:,.0f} USD"])
            return self._keep("AMOUNT", currency.format(value))
        if kind == "ticket":
            return self._faker("en_US").bothify("INC#######")
        if kind == "order":
            return self._faker("en_US").bothify("ORD-######")
        if kind == "hours":
            return str(rng.choice([2, 4, 6, 8, 12, 36]))
        raise KeyError(slot)

    def _organization(self) -> str:
        """A listed organization, or (as often as the vocabulary says) a surname with a legal form."""
        share = self._vocabulary.generated_org_share
        if share and self._rng.random() < share:  # no draw at 0: the dev set stays as it was
            locale = self._rng.choice(list(COMPANY_FORMS))
            return f"{self._faker(locale).last_name()} {self._rng.choice(COMPANY_FORMS[locale])}"
        return self._rng.choice(self._vocabulary.organizations)


def _ascii(text: str) -> str:
    import unicodedata

    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


# -- templates --------------------------------------------------------------------------------
# ``{slot}`` is filled from :class:`_Slots`; ``[[word]]`` is template text that must survive.

TEMPLATES: dict[str, tuple[str, ...]] = {
    "support_ticket": (
        "Customer {name} ({email}) says the [[invoice]] for {order} from {org} was charged twice. "
        "Please draft a polite reply to {first} confirming the [[refund]] of {amount} by {date}.",
        "Ticket {ticket}: {name} cannot log in to {product} since {date}. Callback number {phone}. "
        "She is based in {city} and prefers {language}. Summarize the issue for tier 2.",
        "Hi team, {first} {last} from {org} called from {phone} about a broken {product}. "
        "Ship the replacement to {address}, {city}. Write the [[shipping]] confirmation email.",
        "Write a reply to {email}: the customer, {name}, asked whether {product} is available in {country} "
        "and whether [[support]] is offered in {language}.",
        "Escalation from {org}: {name} reports that {product} exports fail. Contact: {email}, {phone}. "
        "Give me three troubleshooting steps.",
        "Please translate into {language} for {first}: your [[warranty]] claim for the {product} "
        "has been approved on {date}; the courier will collect it at {address}.",
        "{name} wrote to {email2} asking to close the account. His phone is {phone}. "
        "Draft a retention offer mentioning our {product} [[discount]].",
        "Summarize this chat: [Agent] Hello {first}, how can I help? [Customer] My {product} license from "
        "{org} expired on {date}. You can reach me on {phone} or {email}. [Agent] Thanks {first}, renewing now.",
    ),
    "hr_note": (
        "HR note: {name} (employee SSN {ssn}) joins the {city} office on {date}. "
        "She is {nationality} and speaks {language}. Prepare the [[onboarding]] checklist.",
        "Performance review draft for {first} {last}: exceeded targets on the {product} rollout at {org}. "
        "Salary adjustment of {amount} approved by {name2}. Rewrite this in a neutral tone.",
        "Payroll update: please pay {name}'s relocation bonus of {amount} to IBAN {iban}. "
        "National Insurance number {nino}. Home address {address}.",
        "Write a reference letter for {name}, who worked with us at {org} in {city} until {date}. "
        "Mention {first}'s work on {product}.",
        "Sick leave request from {name} ({email}), phone {phone}, for the week of {date}. "
        "Manager {name2} approved it. Draft the [[confirmation]].",
        "Background check for candidate {name}, SSN {ssn}, current address {address}. "
        "Candidate is {nationality}, fluent in {language}. List the documents we still need.",
        "Exit interview summary: {first} is leaving {org} for a role in {country}. "
        "Forward the final payslip to {email} and call {phone} if questions.",
        "Update the emergency contact for {name}: {name2}, phone {phone}. Employee lives at {address}.",
    ),
    "payment": (
        "Refund {amount} to card {card} for {name}; the order {order} from {org} was cancelled on {date}.",
        "Wire {amount} to {name}, IBAN {iban}, reference {order}. Write the [[remittance]] advice.",
        "The payment from card {card} failed for customer {name} ({email}). Explain the decline code to them.",
        "Vendor {org} asks us to change their bank details to account {account}, routing {routing}, "
        "contact {name} at {phone}. Is this a typical [[fraud]] pattern?",
        "Reconcile: {name} paid {amount} on {date} with card ending in {card}. Customer in {city}, {country}.",
        "Chargeback dispute: cardholder {name}, card {card}, disputes {amount} charged by {org}. "
        "Draft our response letter.",
        "Please set up a direct debit from IBAN {iban} for {name} ({email}), "
        "first collection {date}, {amount} monthly.",
        "Our {nationality} customer {name} wants the invoice in {language}; they will pay {amount} "
        "from account number {account}. Prepare the bilingual [[invoice]] text.",
    ),
    "incident_report": (
        "Incident {ticket}: unusual logins to {product} from {ip} for user {name} ({email}) on {date}. "
        "Write the incident summary for the security team.",
        "Our [[firewall]] blocked {ip} and {ip2} after {hours} hours of scanning. The on-call engineer "
        "{name} ({phone}) escalated to {org}. Draft the post-mortem timeline.",
        "Data exposure: a spreadsheet with {name}'s SSN {ssn} and card {card} was emailed to {email2} by mistake. "
        "What do we need to report, and by when?",
        "Phishing report from {first} {last} in {city}: an email from {email} asked for {product} credentials. "
        "Sender IP {ip}. Classify the threat.",
        "VPN outage in {city} since {date}. Affected user {name}, laptop IP {ip}, called from {phone}. "
        "Write the status page update (no customer names).",
        "Lost device: {name}'s {product} was stolen in {country}. Last seen IP {ip}. "
        "Home address on file: {address}. Draft the remote wipe request.",
        "Access review: {name} still has admin rights in {product} although they moved to {org} on {date}. "
        "Contact {email}. Recommend next steps.",
    ),
    "question": (
        "What is the capital of {country}, and which languages besides {language} are spoken there?",
        "Summarize the pros and cons of migrating from {product} to {product2} for a team in {city}.",
        "How should {org} present a budget of {amount} for {date} to the board?",
        "Explain the difference between [[GDPR]] and [[CCPA]] for a {nationality} company selling in {country}.",
        "Write a haiku about [[Kubernetes]] upgrades in {city} in winter.",
        "Give me a checklist for a [[quarterly]] security review of {product} at {org}.",
        "Translate 'the meeting moved to {date}' into {language}.",
        "Our {nationality} subsidiary in {city} earned {amount} last quarter; draft two sentences for the newsletter.",
    ),
}

#: Tuning templates, second generation: other registers than ``TEMPLATES`` (chat, e-mail with a
#: signature, records, lists, log lines, surnames with titles). Heuristics may be tuned on these;
#: the held-out split stays the judge.
TUNE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "support_ticket": (
        "hey, quick one: {first} from {org} pinged me again about the {product} seats. "
        "can you write back to {email} that the renewal is on {date}?",
        "From: {email}\nSubject: {product} keeps crashing\n\nHello,\nsince {date} the app closes on start. "
        "I tried reinstalling twice.\n\nBest regards,\n{name}\n{org}\n{phone}\n\nWrite a first reply.",
        "Case notes\n- Caller: {last}, {first}\n- Callback: {phone}\n- Product: {product}\n- Site: {city}\n"
        "Turn these notes into a short handover for the night shift.",
        "Mr. {last} says the courier left the parcel at the wrong door; the right one is {address}. "
        "He wants the [[delivery]] fee of {amount} back. Suggest a reply.",
        "Rewrite politely: '{first}, we told you twice that {product} is not supported in {country}.'",
        "Our {language}-speaking customer {name} needs the {product} setup guide. Send it to {email} and "
        "cc {name2}. Draft the cover note.",
        "Complaint forwarded by {name2}: {name} was on hold for 40 minutes. Customer number {order}, "
        "phone {phone}. Write an apology that offers a [[voucher]].",
        "Can you classify this ticket? 'Dear {org} support, my {product} invoice shows {amount} "
        "instead of the agreed price. Kind regards, {first} {last}'",
    ),
    "hr_note": (
        "Attendees: {name}, {name2}, {name3}\nTopic: {product} training budget for {date}\n"
        "Turn the attendee list and topic into a meeting invite.",
        "Ms. {last} will cover for {name2} during parental leave starting {date}. "
        "Please announce it to the {city} team without mentioning the reason.",
        "New hire record: name={name}; start={date}; office={city}; mobile={phone}; email={email}. "
        "Generate the welcome message.",
        "Dr. {last} asked for an ergonomic chair; medical note attached. Reply to {email} saying "
        "[[facilities]] will call {phone} this week.",
        "Promotion memo: {first} {last} moves to team lead in {city}. {name2} signed off. "
        "Write two upbeat sentences for the newsletter.",
        "{first} asked whether the {nationality} tax form is needed for the {country} assignment. "
        "Draft an answer; payroll contact is {name2}.",
        "Rewrite this note for the personnel file: '{last} arrived late on {date}, talked to {first2} "
        "about it, no further action.'",
        "Please check the bank details for {name}: IBAN {iban}, SSN {ssn}. Are they complete for the [[payroll]] run?",
    ),
    "payment": (
        "txn failed: holder={name} card={card} amount={amount} merchant={org}. Explain the failure to support.",
        "Invoice {order} from {org}, {amount}, due {date}. Pay to IBAN {iban}, beneficiary {name}. "
        "Check the invoice for anything unusual.",
        "Please update the payee: {last}, {first} / account {account} / routing {routing}. "
        "Is a callback to {phone} required by our policy?",
        "Customer {first} {last} paid twice with card {card}. Refund one payment of {amount} "
        "and email {email} a confirmation.",
        "Expense claim by {name2}: dinner with {name} of {org} in {city}, {amount}. "
        "Does it fit the [[hospitality]] policy?",
        "Translate to {language}: 'Dear {first}, your payment of {amount} reached us on {date}.'",
        "Write a dunning letter to {name}, {address}, for the unpaid {product} subscription ({amount}).",
        "Our {nationality} supplier {org} wants payment to a new account: {iban}. Contact person {name}, "
        "{email}. List the checks before we agree.",
    ),
    "incident_report": (
        "2024-05-02T10:41:07Z WARN auth: failed login user={email} src={ip} attempts=7\n"
        "2024-05-02T10:41:09Z INFO auth: account locked owner={name}\nExplain these log lines.",
        "On-call handover: {first} restarted the {product} cluster at 02:00; {name2} is paged next "
        "({phone}). Summarize for the morning stand-up.",
        "Postmortem draft: the {product} outage in {city} on {date} was spotted by {name}, who called "
        "{org} support. Make the timeline blameless.",
        "Suspicious mail: '{first}, please buy gift cards and send the codes to {email}'. Sender IP {ip}. "
        "Is this [[phishing]]?",
        "Badge log: {last} entered the {city} data centre at 23:10 with a visitor, {name2}. Write the security note.",
        "Laptop of {name} (asset {ticket}) contacted {ip} and {ip2} overnight. "
        "Draft questions for the owner, reachable at {phone}.",
        "Escalation: {name} reports that the {product} dashboard shows another tenant's data. "
        "Who at {org} must we notify, and how fast?",
        "Write a [[vulnerability]] disclosure reply to {name}, a researcher in {country}, thanking "
        "them for the {product} report sent from {email}.",
    ),
    "question": (
        "Compare {product} and {product2} for a 40-person team in {city}.",
        "What time zone is {city} in, and when is a good meeting slot with colleagues in {country}?",
        "Which documents does a {nationality} citizen need to work in {country}?",
        "Write a short tagline for {org}'s new {product} integration.",
        "How do I pivot a table in {product}?",
        "Summarise the main [[VAT]] rules for selling software from {country} to {country2}.",
        "Give five tips for a {language} beginner preparing a business trip to {city} on {date}.",
        "Draft an agenda for the {org} quarterly review; the budget is {amount}.",
        "{org} announced a price increase for {product}. How should we respond before {date}?",
        "Summarise the partnership between {org} and {org2} in three bullet points.",
        "We signed with {org} last year; is their {product} offering still competitive in {country}?",
        "Our supplier {org} missed two deliveries to {city}. Draft a formal warning.",
        "Explain {org}'s Q3 results to a {nationality} investor in plain {language}.",
        "Is {org} or {org2} the better partner for a {product} rollout in {city}?",
        "Per {org}'s travel policy, can I expense {amount} for a hotel in {city}?",
        "List questions for our meeting with {org} about the {product} contract renewal.",
    ),
}

#: Held-out templates: written before the redactor's heuristics were tuned on ``TEMPLATES`` and
#: never tuned on; with :data:`HOLDOUT_ORGANIZATIONS` and friends they say whether the figures
#: carry over to prompts the redactor has not seen.
HOLDOUT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "support_ticket": (
        "Complaint forwarded by {org}: {name} says the {product} sync has been broken since {date}. "
        "Reply to {email} and offer a [[callback]] at {phone}.",
        "{first} from the {city} branch asked why {product} shows the wrong [[currency]] for {org}. "
        "Explain how to fix the setting.",
        "We received a [[return]] from {name}, {address}, for a faulty {product}. "
        "Their {language}-speaking assistant {name2} will call from {phone}.",
        "Customer satisfaction follow-up: {name} rated our {product} support 2/5 after the {date} outage. "
        "Write an apology that mentions the {amount} credit.",
    ),
    "hr_note": (
        "Meeting notes, {date}: {name} presented the {product} migration plan for {org}. "
        "Action items went to {name2} ({email}). Turn this into a summary.",
        "Relocation: {first} {last} moves from {city} to {country} next month; "
        "her new address is {address}. Draft the [[relocation]] checklist.",
        "Visa letter for {name}, {nationality} citizen, passport holder, joining {org} in {city}. "
        "Employer contact {email}, phone {phone}.",
        "Training budget of {amount} approved for {name} to attend the {product} course in {city}. Notify {email2}.",
    ),
    "payment": (
        "Invoice dispute with {org}: they billed {amount} twice. Our AP contact is {name} ({email}). "
        "Draft a firm but friendly [[escalation]].",
        "Expense claim from {name}: hotel in {city}, {amount}, paid with card {card}. Approve or reject?",
        "Supplier onboarding for {org}: IBAN {iban}, billing contact {name}, phone {phone}. "
        "Which checks should [[procurement]] run?",
        "Payout of {amount} to {name} failed: account {account} was closed. Write to {email} asking for new details.",
    ),
    "incident_report": (
        "Security alert: {product} admin console accessed from {ip} at 03:12 using {name}'s credentials. "
        "{org} owns the tenant. Write the first [[containment]] steps.",
        "Ticket {ticket}: the {product} integration with {org} times out for users in {city}. "
        "Reported by {name} ({phone}). Summarize for engineering.",
        "Suspicious wire request: an email claiming to be from {name} asked finance to pay {amount} to IBAN {iban}. "
        "Sender address {email}. Is this [[business email compromise]]?",
        "Badge access log: {name} entered the {city} data center on {date} from IP {ip} without an escort. "
        "Draft the [[incident]] record.",
    ),
    "question": (
        "Compare {product} and {product2} for a mid-sized company in {country}.",
        "What should {org} know about data residency rules in {country} before opening an office in {city}?",
        "Draft an agenda for our partnership kickoff with {org} on {date}.",
        "How do {nationality} customers usually expect invoices in {language} to be formatted?",
        "Summarize the main risks of relying on {product} at {org} for [[payroll]].",
    ),
}

_SLOT = re.compile(r"\{([a-z_]+\d?)\}")
_TERM = re.compile(r"\[\[([^\]]+)\]\]")


def _render(template: str, slots: _Slots) -> str:
    text = _SLOT.sub(lambda m: slots.value(m.group(1)), template)

    def term(match: re.Match[str]) -> str:
        return slots._keep("TERM", match.group(1))

    return _TERM.sub(term, text)


#: Split name → templates and vocabulary. ``dev`` is what the redactor's heuristics were first
#: tuned on, ``tune`` what they were tuned on once ``dev`` was saturated (other registers:
#: records, signatures, chat, logs); ``holdout`` was written before either and is for checking,
#: never for tuning: only its aggregate figures are read.
SPLITS: dict[str, tuple[dict[str, tuple[str, ...]], Vocabulary]] = {
    "dev": (TEMPLATES, Vocabulary(ORGANIZATIONS, PRODUCTS, CITIES)),
    "tune": (TUNE_TEMPLATES, Vocabulary(TUNE_ORGANIZATIONS, TUNE_PRODUCTS, TUNE_CITIES, generated_org_share=0.3)),
    "holdout": (
        HOLDOUT_TEMPLATES,
        Vocabulary(HOLDOUT_ORGANIZATIONS, HOLDOUT_PRODUCTS, HOLDOUT_CITIES, generated_org_share=0.3),
    ),
}


def generate(count: int = 500, seed: int = 7, split: str = "dev") -> list[Sample]:
    """A labeled set of ``count`` samples, the same for the same seed and split.

    Args:
        count: Number of samples, spread evenly over :data:`KINDS`.
        seed: Seeds the template choice and every Faker instance.
        split: ``dev``, ``tune`` or ``holdout`` (see :data:`SPLITS`).
    """
    from faker import Faker

    templates, vocabulary = SPLITS[split]

    rng = random.Random(seed)
    fakers: dict[str, Any] = {}
    for offset, locale in enumerate(LOCALES):
        faker = Faker(locale)
        faker.seed_instance(seed * 1000 + offset)
        fakers[locale] = faker
    samples: list[Sample] = []
    for number in range(count):
        kind = KINDS[number % len(KINDS)]
        template = rng.choice(templates[kind])
        slots = _Slots(rng, fakers, vocabulary)
        text = _render(template, slots)
        keep = [k for k in slots.keep if not any(_contains(k.value, p.value) for p in slots.pii)]
        samples.append(Sample(f"{kind}-{number}", kind, text, tuple(slots.pii), tuple(keep)))
    return samples


def _contains(outer: str, inner: str) -> bool:
    return inner in outer or outer in inner


def present(value: str, text: str) -> bool:
    """Whether ``value`` occurs in ``text`` as a whole token (not inside a longer word)."""
    pattern = r"(?<![\w])" + re.escape(value) + r"(?![\w])"
    return re.search(pattern, text) is not None


def write_jsonl(samples: list[Sample], path: Path) -> None:
    """Write the set as JSON lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for sample in samples:
            handle.write(json.dumps(sample.as_dict(), ensure_ascii=False) + "\n")


def compose(samples: list[Sample], target_chars: int) -> list[Sample]:
    """Longer samples of at least ``target_chars`` characters, each made of whole consecutive samples.

    Their labels are the union of the parts' labels, so leakage is measurable on them too.
    """
    composed: list[Sample] = []
    parts: list[Sample] = []
    for sample in samples:
        parts.append(sample)
        if sum(len(p.text) + 1 for p in parts) >= target_chars:
            composed.append(_join(parts, len(composed)))
            parts = []
    return composed


def _join(parts: list[Sample], number: int) -> Sample:
    pii = tuple(dict.fromkeys(p for part in parts for p in part.pii))
    keep = tuple(
        dict.fromkeys(k for part in parts for k in part.keep if not any(_contains(k.value, v.value) for v in pii))
    )
    return Sample(f"composed-{number}", "composed", "\n".join(part.text for part in parts), pii, keep)


@dataclass
class Labels:
    """Counts over a set, for a quick look (``python -m airlock.devstack.eval --stats``)."""

    pii: dict[str, int] = field(default_factory=dict)
    keep: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, samples: list[Sample]) -> Labels:
        """Count the planted values and must-survive words by category."""
        labels = cls()
        for sample in samples:
            for planted in sample.pii:
                labels.pii[planted.category] = labels.pii.get(planted.category, 0) + 1
            for keep in sample.keep:
                labels.keep[keep.category] = labels.keep.get(keep.category, 0) + 1
        return labels
