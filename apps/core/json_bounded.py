"""JSON from strangers with a bound on nesting: the one decoder of request bodies and websocket frames.

Python's ``json`` recurses once per nesting level: a 100,000-deep ``[[[...]]]`` raises ``RecursionError`` (not a
``ValueError``, so DRF's parser let it through as a 500), and a document just under the interpreter's limit parses
but then breaks whatever walks it next (a serializer, ``json.dumps`` for the audit log). Fieldwatch's documents
are a few levels deep; ``MAX_DEPTH`` leaves room for anything legitimate and refuses the rest before parsing.
"""

import json
import re
from typing import Any

MAX_DEPTH = 64

# A JSON string (escapes included), unrolled so that long strings cost no backtracking; brackets inside strings do
# not nest anything.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


class JSONTooDeep(ValueError):
    """The document nests arrays and objects deeper than the bound."""


def json_nesting_exceeds(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether ``text`` nests arrays/objects more than ``limit`` levels deep (exact for valid JSON; for invalid JSON
    the parser's own error follows anyway). Linear, and free for the usual small document: a document with at most
    ``limit`` opening brackets cannot nest deeper."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def json_loads_bounded(text: str, *, max_depth: int = MAX_DEPTH, **options) -> Any:
    """``json.loads`` that refuses documents nested deeper than ``max_depth`` with ``JSONTooDeep``; every refusal
    is a ``ValueError`` (``options`` go to ``json.loads``, e.g. ``parse_constant``)."""
    if json_nesting_exceeds(text, max_depth):
        raise JSONTooDeep(f"nested deeper than {max_depth} levels")
    try:
        return json.loads(text, **options)
    except RecursionError:  # unreachable under the bound; kept so that no input can ever raise anything else
        raise JSONTooDeep(f"nested deeper than {max_depth} levels") from None
