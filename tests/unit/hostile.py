"""Hypothesis strategies for hostile records: what a foreign writer could put on any topic."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

#: Small JSON values of every type, nested a little.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``document`` (object keys and list indexes)."""
    found = [prefix] if prefix else []
    if isinstance(document, dict):
        for key, value in document.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found.extend(_paths(value, (*prefix, index)))
    return found


def _replace(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, *rest = path
    copy = dict(document) if isinstance(document, dict) else list(document)
    copy[head] = _replace(document[head], tuple(rest), value)
    return copy


@st.composite
def hostile_records(draw: st.DrawFn, genuine: bytes) -> bytes:
    """Bytes that are not ``genuine`` but may look like it: garbage, poison, a mutated copy."""
    kind = draw(st.sampled_from(["bytes", "nested", "surrogate", "nan", "mutated", "dropped"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "nested":
        return draw(st.sampled_from([b"[", b'{"a":'])) * draw(st.integers(201, 20_000))
    document = json.loads(genuine)
    paths = _paths(document)
    path = draw(st.sampled_from(paths))
    if kind == "surrogate":
        return json.dumps(_replace(document, path, "x\ud800")).encode()
    if kind == "nan":
        return json.dumps(_replace(document, path, float("nan"))).encode()
    if kind == "dropped":  # one key of the object holding ``path`` left out
        *target, last = path
        container = document
        for step in target:
            container = container[step]
        if isinstance(container, dict):
            trimmed = {k: v for k, v in container.items() if k != last}
            return json.dumps(_replace(document, tuple(target), trimmed)).encode()
    return json.dumps(_replace(document, path, draw(JSON_VALUES))).encode()
