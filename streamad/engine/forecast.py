"""Forecasts (ELASTIC_MODEL §6.2, ELASTIC_API §4.8-4.9): each modelled series projected forward.

A forecast reads the models and never changes them (`SeriesBank.forecast` is a pure function of the
state). It starts at the end of the last final bucket and covers `duration`, cut, as Elastic's, to
the length of history seen (`last + (last - first)`). One `model_forecast` document per series and
future bucket, then one `model_forecast_request_stats` document. Everything comes from the request
(id, create time) and the state, so replaying the request gives the same documents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamad.engine.ids import values_to_id
from streamad.engine.scorer import _r  # the rounding every result document uses

# functions whose models can be projected (Elastic's function_t::isForecastSupported, in spirit)
UNSUPPORTED = frozenset({"rare", "freq_rare", "info_content", "time_of_day", "time_of_week", "lat_long"})


@dataclass(frozen=True)
class ForecastRequest:
    forecast_id: str
    duration_s: int
    create_ms: int  # when it was requested (wall clock, carried by the request)
    expires_in_s: int  # 0: never


def unsupported_reason(job) -> str | None:
    """Why a job cannot be forecast (the API's 400), or None."""
    for det in job.detectors:
        if det.over_field_name:
            return f"detector [{det.detector_index}] uses over_field_name: population analysis cannot be forecast"
        if det.spec.statistic in UNSUPPORTED:
            return f"detector [{det.detector_index}] uses [{det.function}], which cannot be forecast"
    return None


def forecast_plan(engine, req: ForecastRequest) -> tuple:
    """What a forecast asked now covers: (future bucket times or None, why it cannot run or None,
    the job's latest record time or None)."""
    firsts = [t for t in engine.first_times if t is not None]
    reason = unsupported_reason(engine.job)
    if reason is None and (engine.last_final_end is None or not firsts):
        reason = "Cannot run forecast: the job has not seen a full bucket of data yet"
    if reason is not None:
        return None, reason, engine.latest_time
    span = engine.span
    start = int(engine.last_final_end)
    history = start - int(min(firsts))
    end = start + min(int(req.duration_s), max(history, span))
    return np.arange(start, end, span, dtype=np.int64), None, engine.latest_time


def forecast_docs(engine, req: ForecastRequest, plan: tuple | None = None, columns: list | None = None) -> list[dict]:
    """The forecast documents of a job engine for one request (request stats last). `plan` and
    `columns` come from the time the forecast was asked when its shards answered later."""
    job = engine.job
    jid = job.job_id
    span = engine.span
    stats = {"job_id": jid, "result_type": "model_forecast_request_stats", "forecast_id": req.forecast_id,
             "processed_record_count": 0}
    times, reason, latest_time = plan if plan is not None else forecast_plan(engine, req)
    docs: list[dict] = []
    if reason is None:
        # the shards project their series; the columns come merged in series-key order
        if columns is None:
            columns = engine.forecast_columns(times)
        for det, cols in zip(engine.gatherers, columns):
            docs.extend(_detector_docs(det, cols, jid, span, req.forecast_id, times))
    stats["processed_record_count"] = len(docs)
    if reason is not None:
        stats["forecast_messages"] = [reason]
    if latest_time is not None:
        stats["timestamp"] = int(math.floor(latest_time)) * 1000
    if reason is None:
        stats["forecast_start_timestamp"] = int(times[0]) * 1000
        stats["forecast_end_timestamp"] = (int(times[-1]) + span) * 1000 if len(times) else stats[
            "forecast_start_timestamp"]
    stats["forecast_create_timestamp"] = req.create_ms
    if req.expires_in_s > 0:
        stats["forecast_expiry_timestamp"] = req.create_ms + req.expires_in_s * 1000
    stats.update(forecast_progress=1.0, processing_time_ms=0,
                 forecast_memory_bytes=8 * 3 * max(len(docs), 1),
                 forecast_status="failed" if reason is not None else "finished",
                 _id=f"{jid}_model_forecast_request_stats_{req.forecast_id}")
    docs.append(stats)
    return docs


def _detector_docs(det, columns: list, jid: str, span: int, forecast_id: str, times: np.ndarray) -> list[dict]:
    """det: the detector's (gathering) state, for its config; columns: per feature, (series keys in
    key order, pred, lower, upper) or None."""
    out: list[dict] = []
    spec = det.det
    for f, (feature, _side) in enumerate(det.feature_sides):
        if columns[f] is None or not len(times):
            continue
        keys, pred, lower, upper = columns[f]
        name = feature if det.statistic == "metric" else det.description
        for i, t in enumerate(times):
            ts = int(t) * 1000
            for j, key in enumerate(keys):
                part, by, _over = key
                doc: dict = {"job_id": jid, "forecast_id": forecast_id, "result_type": "model_forecast",
                             "bucket_span": span, "detector_index": spec.detector_index, "timestamp": ts}
                if spec.partition_field_name:
                    doc["partition_field_name"], doc["partition_field_value"] = spec.partition_field_name, part
                if spec.by_field_name:
                    doc["by_field_name"], doc["by_field_value"] = spec.by_field_name, by
                doc["model_feature"] = name
                doc.update(forecast_lower=_r(float(lower[i, j])), forecast_upper=_r(float(upper[i, j])),
                           forecast_prediction=_r(float(pred[i, j])))
                doc["_id"] = (f"{jid}_model_forecast_{forecast_id}_{ts}_{span}_{spec.detector_index}_"
                              f"{values_to_id(by, part)}")
                out.append(doc)
    return out
