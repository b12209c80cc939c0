"""Raw records from NDJSON or CSV (optionally gzipped), a file or stdin.

`read_records(path)` yields `(raw, doc, error)`: the raw bytes of the record, the decoded dict (or
None) and why it could not be decoded (or None). Nothing raises for bad records: the caller counts
them and sends them to the dead-letter sink.
"""

from __future__ import annotations

import csv
import gzip
import io
import sys
import zlib
from collections.abc import Iterator

import orjson

Record = tuple[bytes, "dict | None", "str | None"]


def _open_binary(path: str):
    if path == "-":
        return sys.stdin.buffer
    f = open(path, "rb")  # noqa: SIM115 - closed by the caller's generator
    if f.peek(2)[:2] == b"\x1f\x8b" if hasattr(f, "peek") else path.endswith(".gz"):
        return gzip.GzipFile(fileobj=f)
    return f


def sniff_format(path: str, head: bytes) -> str:
    name = path[:-3] if path.endswith(".gz") else path
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if name.endswith((".ndjson", ".jsonl", ".json")):
        return "ndjson"
    stripped = head.lstrip()
    return "ndjson" if stripped[:1] in (b"{", b"[", b"") else "csv"


def decode_json(raw: bytes) -> Record:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return raw, None, f"invalid JSON: {exc}"
    if not isinstance(doc, dict):
        return raw, None, f"expected a JSON object, got {type(doc).__name__}"
    return raw, doc, None


def iter_ndjson(stream) -> Iterator[Record]:
    for line in stream:
        raw = line.rstrip(b"\r\n")
        if not raw.strip():
            continue
        yield decode_json(raw)


def _number(text: str):
    if not text:
        return text
    c = text[0]
    if not (c.isdigit() or c in "+-."):
        return text
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            return text
        return value if value == value and value not in (float("inf"), float("-inf")) else text
    # like "1e999", an integer beyond the float range stays text: no consumer can use it as a number
    return value if -_FLOAT_MAX_INT <= value <= _FLOAT_MAX_INT else text


_FLOAT_MAX_INT = int(sys.float_info.max)


def iter_csv(stream, delimiter: str = ",") -> Iterator[Record]:
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
    rows = csv.reader(text, delimiter=delimiter)
    try:
        header = next(rows)
    except StopIteration:
        return
    except csv.Error:
        return
    if header and header[0].startswith("\ufeff"):  # a UTF-8 byte order mark (Excel's "CSV UTF-8")
        header[0] = header[0][1:]
    width = len(header)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            yield b"", None, f"invalid CSV: {exc}"
            continue
        raw = delimiter.join(row).encode()
        if not row or (len(row) == 1 and not row[0]):
            continue
        if len(row) != width:
            yield raw, None, f"CSV row has {len(row)} fields, header has {width}"
            continue
        yield raw, {k: _number(v) for k, v in zip(header, row)}, None


def read_records(path: str, fmt: str | None = None, delimiter: str | None = None) -> Iterator[Record]:
    """Records of a file (or stdin); `delimiter` defaults to a tab for .tsv files, else a comma.

    A damaged compressed stream (truncated or corrupt .gz) ends the input with one error record after
    every record decoded before the damage.
    """
    stream = _open_binary(path)
    try:
        try:
            head = stream.peek(64)[:64] if hasattr(stream, "peek") else b""
        except (OSError, EOFError):
            head = b""
        kind = fmt or ("ndjson" if path == "-" else sniff_format(path, head))
        if delimiter is None:
            name = path[:-3] if path.endswith(".gz") else path
            delimiter = "\t" if name.endswith(".tsv") else ","
        try:
            if kind == "csv":
                yield from iter_csv(stream, delimiter)
            else:
                yield from iter_ndjson(stream)
        except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            yield b"", None, f"unreadable input: {exc}"
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
