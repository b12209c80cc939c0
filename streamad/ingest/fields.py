"""Field lookup in raw JSON events, the way jobs written against Elasticsearch mappings expect.

`FieldGetter("a.b.c")(doc)` finds a literal dotted key `"a.b.c"` first, else walks nested objects.
`X.keyword` falls back to the string form of `X` when absent, so `response.keyword` on
`{"response": 404}` gives "404". Missing fields give `MISSING`. Compiled once per field; the
common case (no dots) is a single dict lookup.
"""

from __future__ import annotations

MISSING = object()


def keyword_string(value):
    """The keyword (string) form Elasticsearch would index for a scalar JSON value."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    return MISSING


class FieldGetter:
    __slots__ = ("path", "_parts", "_keyword_base")

    def __init__(self, path: str):
        self.path = path
        self._parts = tuple(path.split("."))
        self._keyword_base = FieldGetter(path[: -len(".keyword")]) if path.endswith(".keyword") and len(path) > 8 else None

    def __call__(self, doc: dict):
        value = doc.get(self.path, MISSING)
        if value is MISSING and len(self._parts) > 1:
            value = doc
            for part in self._parts:
                if type(value) is not dict:
                    value = MISSING
                    break
                value = value.get(part, MISSING)
                if value is MISSING:
                    break
        if value is MISSING and self._keyword_base is not None:
            base = self._keyword_base(doc)
            if base is not MISSING and base is not None:
                return keyword_string(base)
        return value
