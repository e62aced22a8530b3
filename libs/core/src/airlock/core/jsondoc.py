r"""Reading JSON that someone else wrote, with bounds that hold for any input.

Python's ``json.loads`` recurses once per nesting level (``[`` × 50,000 raises
``RecursionError``, which no handler expects) and accepts lone surrogate escapes
(``"\ud800"``), which become strings that cannot be encoded again: the first digest, log
line or ``model_dump_json`` of such a value raises far from the record that brought it.
Both once escaped a handler and took a whole poll of other tenants' requests with them.

:func:`parse_json` uses pydantic-core's parser (the one ``model_validate_json`` uses):
iterative, nesting capped at 200 levels, lone surrogates and invalid UTF-8 refused, and
``NaN``/``Infinity`` refused (they are not JSON and cannot be written back as JSON).
Every failure is one exception type, :class:`NotJSON`, whose message gives the position
and never the content.
"""

from __future__ import annotations

import pydantic_core

#: Deepest nesting accepted (fixed by pydantic-core's parser; stated here for the docs).
MAX_DEPTH = 200


class NotJSON(ValueError):
    """The bytes are not one JSON document within the bounds (message: reason and position)."""


def parse_json(value: bytes | str) -> object:
    """The JSON document in ``value``.

    Raises:
        NotJSON: Not UTF-8, not JSON, nested deeper than :data:`MAX_DEPTH`, a lone surrogate
            escape, ``NaN``/``Infinity``, or trailing bytes after the document.
    """
    try:
        return pydantic_core.from_json(value, allow_inf_nan=False)
    except ValueError as error:
        raise NotJSON(str(error)) from None
