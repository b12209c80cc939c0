"""Elasticsearch query DSL evaluated on one event at a time.

`compile_query(dsl)` returns a predicate `doc -> bool`. Supported: match_all, match_none, term, terms,
match, match_phrase, range (numbers and dates; gt/gte/lt/lte), exists, prefix, wildcard, ids, bool
(must, filter, should with minimum_should_match, must_not). Anything else is a ConfigError at job
creation, never a surprise at run time. Text matching uses a simple standard-analyzer stand-in:
lowercased alphanumeric tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from streamad.config.errors import ConfigError
from streamad.ingest.fields import MISSING, FieldGetter, keyword_string
from streamad.ingest.timeparse import parse_iso8601

Predicate = Callable[[dict], bool]
_TOKENS = re.compile(r"[0-9A-Za-z_]+")
_ALWAYS: Predicate = lambda doc: True  # noqa: E731
_NEVER: Predicate = lambda doc: False  # noqa: E731


def _flatten(items: list, out: list) -> list:
    for item in items:
        if isinstance(item, list):
            _flatten(item, out)
        elif item is not None:
            out.append(item)
    return out


def _values(value) -> list:
    """The values Elasticsearch would index for a field: arrays flattened, nulls dropped."""
    if value is MISSING or value is None:
        return []
    return _flatten(value, []) if isinstance(value, list) else [value]


def _eq(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or keyword_string(a) == keyword_string(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    ka = keyword_string(a)
    return ka is not MISSING and ka == keyword_string(b)  # objects are never equal to anything


def _tokens(value) -> list[str]:
    text = value if isinstance(value, str) else keyword_string(value)
    return [t.lower() for t in _TOKENS.findall(text)] if isinstance(text, str) else []


def _single_field(body, path: str, clause: str) -> tuple[str, object]:
    if not isinstance(body, dict):
        raise ConfigError(path, "query_clause_object", f"[{clause}] must be an object")
    fields_ = [k for k in body if k not in ("boost", "_name")]
    if len(fields_) != 1:
        raise ConfigError(path, "query_single_field", f"[{clause}] takes exactly one field")
    return fields_[0], body[fields_[0]]


def _formats(fmt) -> list[str]:
    return [f.strip() for f in fmt.split("||")] if isinstance(fmt, str) else []


def _range_bound(value, fmt, path: str):
    """A bound as a number, or ("date", epoch seconds) when it is a date."""
    if isinstance(value, bool):
        raise ConfigError(path, "range_bound_type", "range bounds must be numbers or dates")
    formats = _formats(fmt)
    if isinstance(value, (int, float)):
        try:
            if "epoch_millis" in formats:
                return ("date", float(value) / 1000.0)
            if "epoch_second" in formats:
                return ("date", float(value))
            return float(value)
        except OverflowError:
            raise ConfigError(path, "range_bound_format", "range bound out of range") from None
    if isinstance(value, str):
        if value.startswith("now"):
            raise ConfigError(path, "range_now_not_supported", "date math with 'now' is not supported yet in streamad queries")
        for f in formats:
            if f in ("epoch_millis", "epoch_second"):
                try:
                    t = float(value)
                except ValueError:
                    continue
                return ("date", t / 1000.0 if f == "epoch_millis" else t)
        t = parse_iso8601(value)
        if t is not None:
            return ("date", t)
        try:
            return float(value)
        except ValueError:
            raise ConfigError(path, "range_bound_format", f"cannot read range bound {value!r}") from None
    raise ConfigError(path, "range_bound_type", "range bounds must be numbers or dates")


def _as_number(value, date: bool):
    """A document value as a number (epoch seconds for dates), None if it is none or not finite."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            x = float(value)
        except OverflowError:  # an int beyond the float range: Elasticsearch rejects it for numeric fields
            return None
        if x - x != 0.0:  # inf or nan
            return None
        return x / 1000.0 if date else x  # dates in documents are epoch ms
    if isinstance(value, str):
        if date:
            t = parse_iso8601(value)
            if t is not None:
                return t
        try:
            x = float(value)
        except ValueError:
            return None
        if x - x != 0.0:
            return None
        return x / 1000.0 if date else x
    return None


def _wildcard(pattern: str) -> re.Pattern:
    out = []
    for ch in pattern:
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _minimum_should_match(spec, n: int, path: str) -> int:
    """Elasticsearch's rule: an integer, or a percentage of the n should clauses truncated toward zero;
    a negative one is how many clauses may be missing (-1 of 3 requires 2; -25% of 3 requires all 3)."""
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise ConfigError(path, "minimum_should_match_format", "must be an integer or percentage")
    text = spec.strip() if isinstance(spec, str) else None
    try:
        if text is not None and text.endswith("%"):
            calc = n * float(text[:-1]) / 100.0
            required = n + int(calc) if calc < 0 else int(calc)
        else:
            calc = int(text) if text is not None else spec
            required = n + calc if calc < 0 else calc
    except (ValueError, OverflowError):
        raise ConfigError(path, "minimum_should_match_format", f"cannot read {spec!r}") from None
    return max(required, 0)


def compile_query(dsl, path: str = "query") -> Predicate:
    if not isinstance(dsl, dict) or len(dsl) != 1:
        raise ConfigError(path, "query_single_clause", "a query object must have exactly one clause")
    (clause, body), = dsl.items()
    at = f"{path}.{clause}"
    if clause == "match_all":
        return _ALWAYS
    if clause == "match_none":
        return _NEVER
    if clause == "bool":
        if not isinstance(body, dict):
            raise ConfigError(at, "query_clause_object", "[bool] must be an object")

        def many(key):
            value = body.get(key, [])
            items = value if isinstance(value, list) else [value]
            return [compile_query(q, f"{at}.{key}[{i}]") for i, q in enumerate(items)]

        unknown = set(body) - {"must", "filter", "should", "must_not", "minimum_should_match", "boost", "_name"}
        if unknown:
            raise ConfigError(f"{at}.{sorted(unknown)[0]}", "query_unknown_bool_key", f"unknown bool key [{sorted(unknown)[0]}]")
        must = many("must") + many("filter")
        should, must_not = many("should"), many("must_not")
        msm = _minimum_should_match(body.get("minimum_should_match", 1 if should and not must else 0), len(should),
                                    f"{at}.minimum_should_match")

        def run_bool(doc) -> bool:
            for q in must:
                if not q(doc):
                    return False
            for q in must_not:
                if q(doc):
                    return False
            if msm:
                hits = 0
                for q in should:
                    if q(doc):
                        hits += 1
                        if hits >= msm:
                            return True
                return False
            return True

        return run_bool
    if clause == "exists":
        if not isinstance(body, dict) or not isinstance(body.get("field"), str):
            raise ConfigError(at, "exists_field", "[exists] needs a field")
        get = FieldGetter(body["field"])
        return lambda doc: bool(_values(get(doc)))
    if clause == "ids":
        values = body.get("values") if isinstance(body, dict) else None
        if not isinstance(values, list):
            raise ConfigError(at, "ids_values", "[ids] needs a values array")
        wanted = {str(v) for v in values}
        return lambda doc: str(doc.get("_id", "")) in wanted
    if clause == "terms":
        if not isinstance(body, dict):
            raise ConfigError(at, "query_clause_object", "[terms] must be an object")
        fields_ = [k for k in body if k not in ("boost", "_name")]
        if len(fields_) != 1 or not isinstance(body[fields_[0]], list):
            raise ConfigError(at, "terms_values", "[terms] takes one field with an array of values")
        if any(w is None or isinstance(w, (dict, list)) for w in body[fields_[0]]):
            raise ConfigError(f"{at}.{fields_[0]}", "terms_values", "[terms] values must be strings, numbers or booleans")
        get = FieldGetter(fields_[0])
        wanted = list(body[fields_[0]])
        return lambda doc: any(_eq(v, w) for v in _values(get(doc)) for w in wanted)
    if clause not in ("term", "match", "match_phrase", "range", "prefix", "wildcard"):
        raise ConfigError(at, "query_not_supported", f"query clause [{clause}] is not supported")
    fname, spec = _single_field(body, at, clause)
    get = FieldGetter(fname)
    fat = f"{at}.{fname}"
    if clause == "term":
        value = spec.get("value") if isinstance(spec, dict) else spec
        if value is None or isinstance(value, (dict, list)):
            raise ConfigError(fat, "term_value", "[term] needs a scalar value")
        ci = isinstance(spec, dict) and spec.get("case_insensitive") is True
        if ci:
            low = keyword_string(value).lower()
            return lambda doc: any(isinstance(keyword_string(v), str) and keyword_string(v).lower() == low
                                   for v in _values(get(doc)))
        return lambda doc: any(_eq(v, value) for v in _values(get(doc)))
    if clause in ("match", "match_phrase"):
        query = spec.get("query") if isinstance(spec, dict) else spec
        if query is None or isinstance(query, (dict, list)):
            raise ConfigError(fat, f"{clause}_query", f"[{clause}] needs a query value")
        wanted = _tokens(query)
        if clause == "match_phrase":
            n = len(wanted)
            return lambda doc: any(
                _tokens(v)[i:i + n] == wanted for v in _values(get(doc)) for i in range(max(len(_tokens(v)) - n + 1, 1))
            ) if n else True
        op = (spec.get("operator", "or") if isinstance(spec, dict) else "or").lower()
        want = set(wanted)
        if op == "and":
            return lambda doc: any(want <= set(_tokens(v)) for v in _values(get(doc)))
        return lambda doc: any(want & set(_tokens(v)) for v in _values(get(doc)))
    if clause == "range":
        if not isinstance(spec, dict):
            raise ConfigError(fat, "range_object", "[range] needs an object of bounds")
        fmt = spec.get("format")
        bounds = []
        for op in ("gt", "gte", "lt", "lte", "from", "to"):
            if op in spec and spec[op] is not None:
                bound = _range_bound(spec[op], fmt, f"{fat}.{op}")
                if op == "from":  # the old form: inclusive unless include_lower is false
                    op = "gte" if spec.get("include_lower", True) is not False else "gt"
                elif op == "to":
                    op = "lte" if spec.get("include_upper", True) is not False else "lt"
                bounds.append((op, bound))
        unknown = set(spec) - {"gt", "gte", "lt", "lte", "from", "to", "format", "boost", "time_zone",
                               "include_lower", "include_upper", "relation"}
        if unknown:
            raise ConfigError(f"{fat}.{sorted(unknown)[0]}", "range_unknown_key", f"unknown range key [{sorted(unknown)[0]}]")
        date = any(isinstance(b, tuple) for _, b in bounds) or fmt is not None
        checks = [(op, b[1] if isinstance(b, tuple) else b) for op, b in bounds]

        def in_range(doc) -> bool:
            for v in _values(get(doc)):
                x = _as_number(v, date)
                if x is None:
                    continue
                ok = True
                for op, b in checks:
                    if (op == "gt" and not x > b) or (op == "gte" and not x >= b) or \
                       (op == "lt" and not x < b) or (op == "lte" and not x <= b):
                        ok = False
                        break
                if ok:
                    return True
            return False

        return in_range
    if clause in ("prefix", "wildcard"):
        value = spec.get("value", spec.get(clause)) if isinstance(spec, dict) else spec
        if not isinstance(value, str):
            raise ConfigError(fat, f"{clause}_value", f"[{clause}] needs a string value")
        if clause == "prefix":
            return lambda doc: any(isinstance(keyword_string(v), str) and keyword_string(v).startswith(value)
                                   for v in _values(get(doc)))
        rx = _wildcard(value)
        return lambda doc: any(isinstance(keyword_string(v), str) and rx.match(keyword_string(v)) is not None
                               for v in _values(get(doc)))
    raise ConfigError(at, "query_not_supported", f"query clause [{clause}] is not supported")
