"""The anomalies table, as Kibana's Anomaly Explorer shows it, from result documents.

Reads record documents (the last one per `_id` wins, as in Elasticsearch), keeps the best
`per_job` of each job and formats them as a plain-text table: job, time, severity, score,
entity, actual vs typical, influencers.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

SEVERITIES = ((75.0, "critical"), (50.0, "major"), (25.0, "minor"), (3.0, "warning"), (0.0, "low"))


def severity(score: float) -> str:
    """Kibana's severity bands of a 0..100 score."""
    for floor, name in SEVERITIES:
        if score >= floor:
            return name
    return "low"


def latest_records(docs: Iterable[dict]) -> list[dict]:
    """Final record documents, one per `_id` (re-emitted documents replace earlier ones)."""
    last: dict[str, dict] = {}
    for doc in docs:
        if doc.get("result_type") == "record" and not doc.get("is_interim"):
            last[doc["_id"]] = doc
    return list(last.values())


def top_anomalies(docs: Iterable[dict], per_job: int = 5) -> list[dict]:
    """The highest-scored records of each job, jobs in name order, best first."""
    by_job: dict[str, list[dict]] = {}
    for rec in latest_records(docs):
        by_job.setdefault(rec["job_id"], []).append(rec)
    out = []
    for job in sorted(by_job):
        recs = sorted(by_job[job], key=lambda r: (-r["record_score"], r["timestamp"], r["_id"]))
        out.extend(recs[:per_job])
    return out


def entity(rec: dict) -> str:
    parts = []
    for name in ("partition_field", "over_field", "by_field"):
        if f"{name}_name" in rec:
            parts.append(f"{rec[f'{name}_name']}={rec[f'{name}_value']}")
    return " ".join(parts) or "-"


def _num(values) -> str:
    if not values:
        return "-"
    v = values[0]
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:.3g}"


def _influencers(rec: dict) -> str:
    out = []
    for infl in rec.get("influencers", []):
        out.append(f"{infl['influencer_field_name']}: {', '.join(infl['influencer_field_values'][:3])}")
    return "; ".join(out) or "-"


def format_table(records: list[dict]) -> str:
    header = ("job", "time (UTC)", "severity", "score", "entity", "actual", "typical", "influencers")
    rows = [header]
    for r in records:
        t = datetime.fromtimestamp(r["timestamp"] / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
        rows.append((r["job_id"], t, severity(r["record_score"]), f"{r['record_score']:.0f}", entity(r),
                     _num(r.get("actual")), _num(r.get("typical")), _influencers(r)))
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
