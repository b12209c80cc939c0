"""Field lookup in raw JSON events, the way jobs written against Elasticsearch mappings expect.

`FieldGetter("a.b.c")(doc)` finds a literal dotted key `"a.b.c"` first, else walks nested objects,
where any run of path segments may also be one literal dotted key (`{"a.b": {"c": 5}}`). An array of
objects on the way is flattened as Elasticsearch indexes it: `a.b` of `{"a": [{"b": 1}, {"b": 2}]}`
is `[1, 2]`. `X.keyword` falls back to the keyword (string) form of `X` when absent, so
`response.keyword` on `{"response": 404}` gives "404" and on an array of values gives the list of
their keyword forms. Missing fields give `MISSING`. Compiled once per field; the common case (no
dots) is a single dict lookup.
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


def _flat(value, out: list) -> None:
    """Nested arrays flattened into `out`, nulls dropped (Elasticsearch indexes neither)."""
    for item in value:
        if type(item) is list:
            _flat(item, out)
        elif item is not None:
            out.append(item)


def _walk(value, parts: tuple[str, ...], i: int):
    """The value at parts[i:] below `value` (a list when an array of objects was crossed), or MISSING."""
    if i == len(parts):
        return value
    if type(value) is dict:
        key = parts[i]
        for j in range(i + 1, len(parts) + 1):
            if j > i + 1:
                key = f"{key}.{parts[j - 1]}"
            if key in value:
                found = _walk(value[key], parts, j)
                if found is not MISSING:
                    return found
        return MISSING
    if type(value) is list:
        out: list = []
        for item in value:
            found = _walk(item, parts, i)
            if found is MISSING or found is None:
                continue
            if type(found) is list:
                _flat(found, out)
            else:
                out.append(found)
        return out if out else MISSING
    return MISSING


def _keywords(base):
    """The keyword form of a value: a string, a list of strings for an array, or MISSING."""
    if type(base) is not list:
        return keyword_string(base)
    flat: list = []
    _flat(base, flat)
    out = [k for k in map(keyword_string, flat) if k is not MISSING]
    return out if out else MISSING


class FieldGetter:
    __slots__ = ("path", "_parts", "_keyword_base", "_top_keyword")

    def __init__(self, path: str):
        self.path = path
        self._parts = tuple(path.split("."))
        self._keyword_base = FieldGetter(path[: -len(".keyword")]) if path.endswith(".keyword") and len(path) > 8 else None
        # "X.keyword" with X a top-level key: the common case of a keyword field (e.g.
        # response.keyword), answered without the walk when X holds no object or array
        self._top_keyword = self._parts[0] if self._keyword_base is not None and len(self._parts) == 2 else None

    def __call__(self, doc: dict):
        value = doc.get(self.path, MISSING)
        if value is MISSING and self._top_keyword is not None:
            base = doc.get(self._top_keyword, MISSING)
            kind = type(base)
            if kind is not dict and kind is not list:
                # no object to walk into: the walk finds nothing and the keyword form of X is it
                return MISSING if base is MISSING or base is None else keyword_string(base)
        if value is MISSING and len(self._parts) > 1:
            value = _walk(doc, self._parts, 0)
        if value is MISSING and self._keyword_base is not None:
            base = self._keyword_base(doc)
            if base is not MISSING and base is not None:
                return _keywords(base)
        return value
