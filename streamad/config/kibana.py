"""Kibana's anomaly detection job export file: `{job, datafeed}` objects (one object or a list).

`read_export` turns such a file into jobs with their datafeeds attached as `datafeed_config`, the way
streamad runs them; `write_export` renders jobs back into the same shape (exclude_generated form).
"""

from __future__ import annotations

from streamad.config.errors import ConfigError
from streamad.config.job import Job, default_query_delay_ms


def read_export(data, *, filters=None, now_ms: int | None = None) -> list[Job]:
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(o, dict) and "job" in o for o in items):
        raise ConfigError("export", "kibana_export_format", "expected Kibana's export: {job, datafeed} objects")
    jobs = []
    for i, item in enumerate(items):
        body = dict(item["job"])
        feed = item.get("datafeed")
        if feed:
            body["datafeed_config"] = feed
        try:
            jobs.append(Job.from_dict(body, filters=filters, now_ms=now_ms))
        except ConfigError as exc:
            raise ConfigError(f"[{i}].{exc.field}", exc.rule, exc.message) from None
    return jobs


def export_item(job: Job) -> dict:
    body = job.to_dict(exclude_generated=True)
    if body.get("custom_settings"):
        body["custom_settings"] = {k: v for k, v in body["custom_settings"].items() if k != "managed"}
    item: dict = {"job": body}
    feed = job.datafeed_config
    if feed is not None:
        full = feed.to_dict()
        out = {k: full[k] for k in ("datafeed_id", "job_id", "query", "indices", "scroll_size",
                                    "delayed_data_check_config")}
        for key in ("frequency", "aggregations", "max_empty_searches"):
            if key in full:
                out[key] = full[key]
        if round(feed.query_delay_s * 1000) != default_query_delay_ms(job.job_id):
            out["query_delay"] = full["query_delay"]
        item["datafeed"] = out
    return item


def write_export(jobs: list[Job]):
    items = [export_item(j) for j in jobs]
    return items[0] if len(items) == 1 else items
