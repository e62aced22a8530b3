"""The redactor keeps the numeric libraries under spaCy to one thread, unless told otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# What ``faststream run airlock.redactor.app:app`` imports before the app, then the modules the
# app wires (the app itself needs keys to import): the setting only works if numpy is not
# loaded before the redactor package is.
PROBE = """
import json, os, sys
import faststream.__main__  # noqa: F401
numpy_before = "numpy" in sys.modules
import airlock.redactor.handlers  # noqa: F401
print(json.dumps({"numpy_before": numpy_before, "numpy_after": "numpy" in sys.modules,
                  "openblas": os.environ.get("OPENBLAS_NUM_THREADS")}))
"""


def probe(**env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True, timeout=120
    )
    answer: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def test_single_threaded_before_numpy_loads() -> None:
    answer = probe()
    assert answer == {"numpy_before": False, "numpy_after": True, "openblas": "1"}


def test_an_explicit_setting_wins() -> None:
    assert probe(OPENBLAS_NUM_THREADS="2")["openblas"] == "2"
