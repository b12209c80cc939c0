"""Elastic's anomaly detection REST API on the worker's web port (ELASTIC_API §3).

Paths, bodies and error JSON are Elasticsearch's, so the seed's curl examples work unchanged.
Mutations go through the registry topic (config, state) and the work topic (control messages for
the job's engine); result queries answer from the results index.
"""

from __future__ import annotations

import copy
import time
import uuid

import orjson
from faust.web import View

from streamad.config.errors import ConfigError
from streamad.config.job import Job, parse_datafeed
from streamad.engine.forecast import unsupported_reason
from streamad.engine.job import check_filters
from streamad.runtime import metrics
from streamad.runtime.context import ContextError, JobContext
from streamad.runtime.results import _bool, _time_ms, query

JSON = "application/json"


class ApiError(Exception):
    def __init__(self, status: int, kind: str, reason: str):
        self.status, self.kind, self.reason = status, kind, reason
        super().__init__(reason)

    def body(self) -> dict:
        cause = {"type": self.kind, "reason": self.reason}
        return {"error": {"root_cause": [cause], **cause}, "status": self.status}


def _missing_job(job_id: str) -> ApiError:
    return ApiError(404, "resource_not_found_exception", f"No known job with id '{job_id}'")


def _missing_feed(feed_id: str) -> ApiError:
    return ApiError(404, "resource_not_found_exception", f"No datafeed with id [{feed_id}] exists")


class Api:
    def __init__(self, worker):
        self.worker = worker
        self.registry = worker.registry
        self.results = worker.results
        self.context = JobContext(worker)

    # ------------------------------------------------------------------ jobs
    def _job(self, job_id: str) -> dict:
        entry = self.registry.jobs.get(job_id)
        if entry is None:
            raise _missing_job(job_id)
        return entry

    async def put_job(self, job_id: str, body: dict) -> dict:
        if job_id in self.registry.jobs:
            raise ApiError(400, "resource_already_exists_exception",
                           f"The job cannot be created with the Id '{job_id}'. The Id is already used.")
        job = Job.from_dict(body, job_id=job_id)
        check_filters(job, self.context.filters())  # a rule scope must name an existing filter
        config = job.to_dict()
        config["create_time"] = int(time.time() * 1000)
        feed = config.pop("datafeed_config", None)
        await self.registry.put(f"job/{job_id}", {"config": config, "state": "closed"})
        if feed is not None:
            await self.registry.put(f"datafeed/{feed['datafeed_id']}", {"config": feed, "state": "stopped"})
            config["datafeed_config"] = feed
        return config

    async def update_job(self, job_id: str, body: dict) -> dict:
        """Elastic's `_update`: the fields it allows, validated as a whole job; an opened job takes
        the update through its work log (models and results stay)."""
        entry = self._job(job_id)
        unknown = sorted(set(body) - _UPDATABLE)
        if unknown:
            raise ApiError(400, "x_content_parse_exception", f"[job_update] unknown field [{unknown[0]}]")
        cfg = copy.deepcopy(entry["config"])
        for key, value in body.items():
            if key == "detectors":
                _update_detectors(cfg["analysis_config"]["detectors"], value)
            elif key in ("categorization_filters", "model_prune_window", "per_partition_categorization"):
                cfg["analysis_config"][key] = value
            elif key == "analysis_limits":
                if entry["state"] == "opened":
                    raise ApiError(400, "illegal_argument_exception",
                                   f"Cannot update analysis_limits while job [{job_id}] is open")
                if not isinstance(value, dict):
                    raise ConfigError("analysis_limits", "object_required", "analysis_limits must be an object")
                cfg["analysis_limits"] = {**cfg.get("analysis_limits", {}), **value}
            else:
                cfg[key] = value
        job = Job.from_dict(cfg, job_id=job_id)
        check_filters(job, self.context.filters())
        config = job.to_dict()
        config["create_time"] = entry["config"].get("create_time", 0)
        config.pop("datafeed_config", None)
        await self.registry.put(f"job/{job_id}", {**entry, "config": config})
        if entry["state"] == "opened":
            await self.worker.send_control(job_id, "update", job=self._job_with_feed(job_id),
                                           **self.context.for_job(config))
        return config

    def get_jobs(self, job_id: str | None) -> dict:
        ids = sorted(self.registry.jobs) if job_id in (None, "_all", "*") else job_id.split(",")
        jobs = []
        for jid in ids:
            entry = self._job(jid)
            cfg = dict(entry["config"])
            feed = self.registry.datafeed_for_job(jid)
            if feed is not None:
                cfg["datafeed_config"] = feed[1]["config"]
            jobs.append(cfg)
        return {"count": len(jobs), "jobs": jobs}

    def _job_with_feed(self, job_id: str) -> dict:
        cfg = dict(self._job(job_id)["config"])
        feed = self.registry.datafeed_for_job(job_id)
        if feed is not None:
            cfg["datafeed_config"] = feed[1]["config"]
        return cfg

    async def open_job(self, job_id: str) -> dict:
        entry = self._job(job_id)
        await self.worker.send_control(job_id, "open", job=self._job_with_feed(job_id),
                                       **self.context.for_job(entry["config"]))
        if entry["state"] != "opened":
            await self.registry.put(f"job/{job_id}", {**entry, "state": "opened", "open_time": int(time.time() * 1000)})
        return {"opened": True, "node": self.worker.settings.app_id}

    async def close_job(self, job_id: str, datafeed_first: bool = True) -> dict:
        """Stop the job's datafeed and close the job. A datafeed reaching its `end` closes the job
        first (`datafeed_first=False`): a crash in between then leaves a started datafeed on a
        closed job, which the worker stops (`Worker._realtime`), never an open job nobody closes."""
        entry = self._job(job_id)
        feed = self.registry.datafeed_for_job(job_id)
        if datafeed_first and feed is not None and feed[1]["state"] == "started":
            await self.registry.put(f"datafeed/{feed[0]}", {**feed[1], "state": "stopped"})
        if entry["state"] == "opened":
            await self.worker.send_control(job_id, "close")
            await self.registry.put(f"job/{job_id}", {**entry, "state": "closed"})
        feed = self.registry.datafeed_for_job(job_id)
        if not datafeed_first and feed is not None and feed[1]["state"] == "started":
            await self.registry.put(f"datafeed/{feed[0]}", {**feed[1], "state": "stopped"})
        return {"closed": True}

    async def delete_job(self, job_id: str, force: bool) -> dict:
        entry = self._job(job_id)
        if entry["state"] == "opened" and not force:
            raise ApiError(409, "status_exception",
                           f"Cannot delete job [{job_id}] because the job is opened")
        feed = self.registry.datafeed_for_job(job_id)
        if feed is not None:
            await self.registry.put(f"datafeed/{feed[0]}", None)
            await self._drop_lookbacks(feed[0])
        await self.worker.send_control(job_id, "delete")
        await self.registry.put(f"job/{job_id}", None)
        self.results.drop(job_id)
        # after the job's own tombstone: a crash between the two leaves only harmless records
        for forecast_id in sorted(self.registry.deleted_forecasts.get(job_id, ())):
            await self.registry.put(f"forecast/{job_id}/{forecast_id}", None)
        return {"acknowledged": True}

    def _opened(self, job_id: str) -> dict:
        entry = self._job(job_id)
        if entry["state"] != "opened":
            raise ApiError(409, "status_exception", f"job [{job_id}] state is [{entry['state']}]; it must be opened")
        return entry

    async def flush(self, job_id: str, params: dict) -> dict:
        self._opened(job_id)
        fields = {"calc_interim": _bool(params.get("calc_interim", False))}
        for name in ("advance_time", "skip_time"):
            if params.get(name) not in (None, ""):
                fields[name] = _time_ms(params[name]) / 1000.0
        await self.worker.send_control(job_id, "flush", **fields)
        return {"flushed": True}

    async def post_data(self, job_id: str, body: bytes) -> dict:
        self._opened(job_id)
        raws = [line for line in body.split(b"\n") if line.strip()]
        await self.worker.send_data(job_id, raws)
        counts = self.results.get(job_id, f"{job_id}_data_counts") or {"job_id": job_id}
        return {**{k: v for k, v in counts.items() if k != "_id"}, "streamad_accepted_record_count": len(raws)}

    async def forecast(self, job_id: str, params: dict) -> dict:
        """Elastic's `_forecast`: the job (open) projects its models forward through its work log."""
        entry = self._opened(job_id)
        reason = unsupported_reason(Job.from_dict(entry["config"]))
        if reason is not None:
            raise ApiError(400, "illegal_argument_exception", f"Cannot run forecast: {reason}")
        duration = _seconds(params.get("duration"), "duration", 86400)
        if duration <= 0 or duration > 3650 * 86400:
            raise ApiError(400, "illegal_argument_exception",
                           "[duration] must be positive and at most 3650d")
        expires = _seconds(params.get("expires_in"), "expires_in", 14 * 86400)
        if expires < 0:
            raise ApiError(400, "illegal_argument_exception", "[expires_in] must not be negative")
        counts = self.results.get(job_id, f"{job_id}_data_counts") or {}
        if not counts.get("processed_record_count"):
            raise ApiError(400, "illegal_argument_exception",
                           f"Cannot run forecast: Forecast cannot be executed as job [{job_id}] has not processed any data")
        forecast_id = uuid.uuid4().hex[:20]
        await self.worker.send_control(job_id, "forecast", forecast_id=forecast_id, duration_s=duration,
                                       expires_in_s=expires, create_ms=int(time.time() * 1000))
        return {"acknowledged": True, "forecast_id": forecast_id}

    async def delete_forecast(self, job_id: str, forecast_id: str | None, params: dict) -> dict:
        """Elastic's DELETE `_forecast[/<ids>]`: ids a comma list, `_all`, `*` or none (all). As
        Elastic, what matches is deleted and only no match at all is a 404 (with `_all` / `*`,
        unless `allow_no_forecasts`). The deletion is a registry record, so every worker's results
        index drops the forecast and never indexes it again; the documents on the results topic
        stay there."""
        self._job(job_id)
        known = self.results.forecasts(job_id)
        everything = forecast_id in (None, "", "_all", "*")
        if everything:
            ids = sorted(known)
        else:
            ids = sorted({f.strip() for f in forecast_id.split(",") if f.strip() in known})
        if not ids:
            if everything and _bool(params.get("allow_no_forecasts", True)):
                return {"acknowledged": True}
            raise ApiError(404, "resource_not_found_exception",
                           f"No forecast(s) [{forecast_id or '_all'}] exists for job [{job_id}]")
        running = [f for f in ids if known[f].get("forecast_status") not in ("finished", "failed")]
        if running:
            raise ApiError(409, "status_exception", f"Forecast(s) [{','.join(running)}] for job [{job_id}] "
                                                    "needs to be either FAILED or FINISHED to be deleted")
        for f in ids:
            # `put` returns once the registry has applied the record: its listener
            # (`Worker._registry_changed`) has dropped the forecast from this worker's index
            await self.registry.put(f"forecast/{job_id}/{f}", {"deleted_ms": int(time.time() * 1000)})
        return {"acknowledged": True}

    def stats(self, job_id: str | None) -> dict:
        ids = sorted(self.registry.jobs) if job_id in (None, "_all", "*") else job_id.split(",")
        out = []
        for jid in ids:
            entry = self._job(jid)
            counts = self.results.get(jid, f"{jid}_data_counts") or _zero_counts(jid)
            size = self.results.get(jid, f"{jid}_model_size_stats") or {
                "job_id": jid, "result_type": "model_size_stats", "model_bytes": 0, "memory_status": "ok"}
            item = {"job_id": jid, "data_counts": _public(counts), "model_size_stats": _public(size),
                    "forecasts_stats": self._forecasts_stats(jid), "state": entry["state"]}
            if entry["state"] == "opened":
                item["node"] = {"name": self.worker.settings.app_id}
                item["open_time"] = f"{max(int(time.time() - entry.get('open_time', 0) / 1000), 0)}s"
            out.append(item)
        return {"count": len(out), "jobs": out}

    def _forecasts_stats(self, job_id: str) -> dict:
        done = self.results.of_type(job_id, "model_forecast_request_stats")
        if not done:
            return {"total": 0, "forecasted_jobs": 0}
        records = [d["processed_record_count"] for d in done]
        statuses: dict[str, int] = {}
        for d in done:
            statuses[d["forecast_status"]] = statuses.get(d["forecast_status"], 0) + 1
        return {"total": len(done), "forecasted_jobs": 1,
                "records": {"total": sum(records), "min": min(records), "max": max(records),
                            "avg": sum(records) / len(records)},
                "status": statuses}

    def results_of(self, job_id: str, kind: str, params: dict) -> dict:
        self._job(job_id)
        rtype, field, sort, key = {
            "buckets": ("bucket", "anomaly_score", "timestamp", "buckets"),
            "records": ("record", "record_score", "record_score", "records"),
            "influencers": ("influencer", "influencer_score", "influencer_score", "influencers"),
        }[kind]
        count, docs = query(self.results.of_type(job_id, rtype), params, field, sort)
        return {"count": count, key: docs}

    # ------------------------------------------------------------------ datafeeds
    async def put_datafeed(self, feed_id: str, body: dict) -> dict:
        if feed_id in self.registry.datafeeds:
            raise ApiError(400, "resource_already_exists_exception", f"A datafeed with id [{feed_id}] already exists")
        job_id = body.get("job_id")
        if not isinstance(job_id, str):
            raise ConfigError("job_id", "job_id_required", "a datafeed needs a job_id")
        if self.registry.datafeed_for_job(job_id) is not None:
            raise ApiError(409, "status_exception", f"A datafeed already exists for job [{job_id}]")
        entry = self._job(job_id)
        job = Job.from_dict(entry["config"])
        feed = parse_datafeed({**body, "datafeed_id": feed_id}, job_id, job.bucket_span_s,
                              time_field=job.data_description.time_field).to_dict()
        await self.registry.put(f"datafeed/{feed_id}", {"config": feed, "state": "stopped"})
        return feed

    def _feed(self, feed_id: str) -> dict:
        feed = self.registry.datafeeds.get(feed_id)
        if feed is None:
            raise _missing_feed(feed_id)
        return feed

    def get_datafeeds(self, feed_id: str | None) -> dict:
        ids = sorted(self.registry.datafeeds) if feed_id in (None, "_all", "*") else feed_id.split(",")
        feeds = [self._feed(f)["config"] for f in ids]
        return {"count": len(feeds), "datafeeds": feeds}

    async def delete_datafeed(self, feed_id: str, force: bool) -> dict:
        feed = self._feed(feed_id)
        if feed["state"] == "started" and not force:
            raise ApiError(409, "status_exception", f"Cannot delete datafeed [{feed_id}] while its status is started")
        await self.registry.put(f"datafeed/{feed_id}", None)
        await self._drop_lookbacks(feed_id)
        return {"acknowledged": True}

    async def _drop_lookbacks(self, feed_id: str, keep_run=None) -> None:
        """Tombstone the lookback progress records of a datafeed's earlier runs (compaction drops them)."""
        prefix = f"lookback/{feed_id}/"
        for key in sorted(k for k in self.registry.lookbacks if k.startswith(prefix)):
            if keep_run is None or not key.startswith(f"{prefix}{keep_run}/"):
                await self.registry.put(key, None)

    async def start_datafeed(self, feed_id: str, params: dict) -> dict:
        feed = self._feed(feed_id)
        job_id = feed["config"]["job_id"]
        self._opened(job_id)
        if feed["state"] == "started":
            raise ApiError(409, "status_exception",
                           f"cannot start datafeed [{feed_id}] because it has already been started")
        start = _time_ms(params.get("start")) if params.get("start") not in (None, "") else None
        end = _time_ms(params.get("end")) if params.get("end") not in (None, "") else None
        if start is not None and end is not None and end <= start:
            raise ApiError(400, "illegal_argument_exception", f"[end] must be after [start]")  # noqa: F541
        # what is already on its topics is read by a lookback per partition (see runtime.lookback);
        # `run` tells this start's lookback progress from an earlier start's; the job learns the plan
        # (each partition's first offset) before any event of the run reaches it
        plan = await self.worker.lookback_plan(feed["config"].get("indices", []), start)
        run = time.time_ns()
        await self.worker.send_control(job_id, "datafeed", start=start, end=end, job=self._job_with_feed(job_id),
                                       run=run, plan=plan)
        await self.registry.put(f"datafeed/{feed_id}", {**feed, "state": "started", "start": start, "end": end,
                                                        "run": run, "lookback": plan})
        await self._drop_lookbacks(feed_id, keep_run=run)
        return {"started": True, "node": [self.worker.settings.app_id]}

    async def stop_datafeed(self, feed_id: str) -> dict:
        feed = self._feed(feed_id)
        if feed["state"] == "started":
            await self.registry.put(f"datafeed/{feed_id}", {**feed, "state": "stopped"})
        return {"stopped": True}

    async def ensure_running(self, body: dict, name: str) -> None:
        """Jobs-dir start-up: create the job if new, open it, start its datafeed (idempotent)."""
        job_id = body.get("job_id") or name
        if job_id not in self.registry.jobs:
            await self.put_job(job_id, body)
        if self.registry.jobs[job_id]["state"] != "opened":
            await self.open_job(job_id)
        feed = self.registry.datafeed_for_job(job_id)
        if feed is not None and feed[1]["state"] != "started":
            await self.start_datafeed(feed[0], {})

    def info(self) -> dict:
        return {"defaults": {"anomaly_detectors": {"categorization_analyzer": {"tokenizer": "ml_standard"},
                                                   "categorization_examples_limit": 4,
                                                   "model_memory_limit": "1024mb",
                                                   "model_snapshot_retention_days": 10,
                                                   "daily_model_snapshot_retention_after_days": 1},
                             "datafeeds": {"scroll_size": 1000}},
                "limits": {"total_ml_memory": "0b"}, "upgrade_mode": False,
                "native_code": {"build_hash": "streamad", "version": _version()}}


def _seconds(value, name: str, default: int) -> int:
    """A duration parameter ("1d", "36h", seconds as a number) in whole seconds."""
    if value in (None, ""):
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    from streamad.config.units import parse_duration

    try:
        return int(parse_duration(value, name))
    except ConfigError as exc:
        raise ApiError(400, "illegal_argument_exception", f"[{name}]: {exc}") from None


_UPDATABLE = frozenset({
    "allow_lazy_open", "analysis_limits", "background_persist_interval", "custom_settings",
    "categorization_filters", "description", "model_plot_config", "model_prune_window",
    "daily_model_snapshot_retention_after_days", "model_snapshot_retention_days",
    "renormalization_window_days", "results_retention_days", "groups", "detectors",
    "per_partition_categorization"})


def _update_detectors(detectors: list[dict], updates) -> None:
    """Apply `_update`'s detectors: [{detector_index, description?, custom_rules?}] in place."""
    if not isinstance(updates, list):
        raise ConfigError("detectors", "list_required", "detectors must be a list of detector updates")
    for i, upd in enumerate(updates):
        path = f"detectors[{i}]"
        if not isinstance(upd, dict):
            raise ConfigError(path, "object_required", "a detector update must be an object")
        extra = sorted(set(upd) - {"detector_index", "description", "custom_rules"})
        if extra:
            raise ConfigError(f"{path}.{extra[0]}", "detector_update_field",
                              "a detector update holds detector_index, description and custom_rules only")
        idx = upd.get("detector_index")
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < len(detectors):
            raise ConfigError(f"{path}.detector_index", "detector_index_range",
                              f"detector_index must be one of the job's detectors (0..{len(detectors) - 1})")
        if "description" in upd:
            detectors[idx]["detector_description"] = upd["description"]
        if "custom_rules" in upd:
            detectors[idx]["custom_rules"] = upd["custom_rules"]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("streamad")
    except Exception:  # noqa: BLE001
        return "0"


def _zero_counts(job_id: str) -> dict:
    from streamad.ingest.counts import DataCounts

    return DataCounts().to_dict(job_id)


def _public(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "_id"}


async def _params(request) -> dict:
    params: dict = dict(request.query)
    if request.can_read_body:
        raw = await request.read()
        if raw.strip():
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ApiError(400, "parse_exception", f"request body is not JSON: {exc}") from None
            if isinstance(body, dict):
                params.update(body)
    return params


async def _body(request) -> dict:
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "parse_exception", f"request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "parse_exception", "request body must be a JSON object")
    return body


def install(worker) -> None:
    """Register the REST views, health probes and /metrics on the worker's Faust web server."""
    app = worker.app
    api = Api(worker)

    def respond(view: View, fn):
        async def run():
            try:
                result = await fn()
                return view.bytes(orjson.dumps(result), content_type=JSON, status=200)
            except ConfigError as exc:
                return view.bytes(orjson.dumps(exc.to_elastic()), content_type=JSON, status=400)
            except ApiError as exc:
                return view.bytes(orjson.dumps(exc.body()), content_type=JSON, status=exc.status)
            except ContextError as exc:
                err = ApiError(exc.status, exc.kind, exc.reason)
                return view.bytes(orjson.dumps(err.body()), content_type=JSON, status=exc.status)
            except ValueError as exc:
                err = ApiError(400, "illegal_argument_exception", str(exc))
                return view.bytes(orjson.dumps(err.body()), content_type=JSON, status=400)
        return run()

    async def _sync(value):
        return value

    @app.page("/_ml/info")
    class Info(View):
        async def get(self, request):
            return await respond(self, lambda: _sync(api.info()))

    @app.page("/_ml/anomaly_detectors/_stats")
    class AllStats(View):
        async def get(self, request):
            return await respond(self, lambda: _sync(api.stats(None)))

    @app.page("/_ml/anomaly_detectors")
    class Jobs(View):
        async def get(self, request):
            return await respond(self, lambda: _sync(api.get_jobs(None)))

    @app.page("/_ml/anomaly_detectors/{job_id}/_forecast")
    class Forecast(View):
        async def post(self, request, job_id):
            async def go():
                return await api.forecast(job_id, await _params(request))
            return await respond(self, go)

        async def delete(self, request, job_id):
            async def go():
                return await api.delete_forecast(job_id, None, await _params(request))
            return await respond(self, go)

    @app.page("/_ml/anomaly_detectors/{job_id}/_forecast/{forecast_id}")
    class ForecastById(View):
        async def delete(self, request, job_id, forecast_id):
            async def go():
                return await api.delete_forecast(job_id, forecast_id, await _params(request))
            return await respond(self, go)

    @app.page("/_ml/anomaly_detectors/{job_id}/_update")
    class JobUpdate(View):
        async def post(self, request, job_id):
            async def go():
                return await api.update_job(job_id, await _body(request))
            return await respond(self, go)

    @app.page("/_ml/anomaly_detectors/{job_id}")
    class JobView(View):
        async def get(self, request, job_id):
            return await respond(self, lambda: _sync(api.get_jobs(job_id)))

        async def put(self, request, job_id):
            async def go():
                return await api.put_job(job_id, await _body(request))
            return await respond(self, go)

        async def delete(self, request, job_id):
            return await respond(self, lambda: api.delete_job(job_id, _bool(request.query.get("force", False))))

    @app.page("/_ml/anomaly_detectors/{job_id}/_open")
    class OpenJob(View):
        async def post(self, request, job_id):
            return await respond(self, lambda: api.open_job(job_id))

    @app.page("/_ml/anomaly_detectors/{job_id}/_close")
    class CloseJob(View):
        async def post(self, request, job_id):
            return await respond(self, lambda: api.close_job(job_id))

    @app.page("/_ml/anomaly_detectors/{job_id}/_flush")
    class FlushJob(View):
        async def post(self, request, job_id):
            async def go():
                return await api.flush(job_id, await _params(request))
            return await respond(self, go)

    @app.page("/_ml/anomaly_detectors/{job_id}/_data")
    class PostData(View):
        async def post(self, request, job_id):
            async def go():
                return await api.post_data(job_id, await request.read())
            return await respond(self, go)

    @app.page("/_ml/anomaly_detectors/{job_id}/_stats")
    class JobStats(View):
        async def get(self, request, job_id):
            return await respond(self, lambda: _sync(api.stats(job_id)))

    for kind in ("buckets", "records", "influencers"):
        def make(kind=kind):
            class Results(View):
                async def get(self, request, job_id):
                    async def go():
                        return api.results_of(job_id, kind, await _params(request))
                    return await respond(self, go)

                async def post(self, request, job_id):
                    return await self.get(request, job_id)
            Results.__name__ = f"Results_{kind}"
            return Results
        app.page(f"/_ml/anomaly_detectors/{{job_id}}/results/{kind}", name=f"results_{kind}")(make())

    @app.page("/_ml/datafeeds")
    class Feeds(View):
        async def get(self, request):
            return await respond(self, lambda: _sync(api.get_datafeeds(None)))

    @app.page("/_ml/datafeeds/{datafeed_id}")
    class FeedView(View):
        async def get(self, request, datafeed_id):
            return await respond(self, lambda: _sync(api.get_datafeeds(datafeed_id)))

        async def put(self, request, datafeed_id):
            async def go():
                return await api.put_datafeed(datafeed_id, await _body(request))
            return await respond(self, go)

        async def delete(self, request, datafeed_id):
            return await respond(self, lambda: api.delete_datafeed(datafeed_id,
                                                                  _bool(request.query.get("force", False))))

    @app.page("/_ml/datafeeds/{datafeed_id}/_start")
    class StartFeed(View):
        async def post(self, request, datafeed_id):
            async def go():
                return await api.start_datafeed(datafeed_id, await _params(request))
            return await respond(self, go)

    @app.page("/_ml/datafeeds/{datafeed_id}/_stop")
    class StopFeed(View):
        async def post(self, request, datafeed_id):
            return await respond(self, lambda: api.stop_datafeed(datafeed_id))

    ctx = api.context

    @app.page("/_ml/filters")
    class Filters(View):
        async def get(self, request):
            return await respond(self, lambda: _sync(ctx.get_filters(None, dict(request.query))))

    @app.page("/_ml/filters/{filter_id}")
    class FilterView(View):
        async def get(self, request, filter_id):
            return await respond(self, lambda: _sync(ctx.get_filters(filter_id, dict(request.query))))

        async def put(self, request, filter_id):
            async def go():
                return await ctx.put_filter(filter_id, await _body(request))
            return await respond(self, go)

        async def delete(self, request, filter_id):
            return await respond(self, lambda: ctx.delete_filter(filter_id))

    @app.page("/_ml/filters/{filter_id}/_update")
    class FilterUpdate(View):
        async def post(self, request, filter_id):
            async def go():
                return await ctx.update_filter(filter_id, await _body(request))
            return await respond(self, go)

    @app.page("/_ml/calendars")
    class Calendars(View):
        async def get(self, request):
            return await respond(self, lambda: _sync(ctx.get_calendars(None, dict(request.query))))

    @app.page("/_ml/calendars/{calendar_id}")
    class CalendarView(View):
        async def get(self, request, calendar_id):
            return await respond(self, lambda: _sync(ctx.get_calendars(calendar_id, dict(request.query))))

        async def put(self, request, calendar_id):
            async def go():
                return await ctx.put_calendar(calendar_id, await _body(request))
            return await respond(self, go)

        async def delete(self, request, calendar_id):
            return await respond(self, lambda: ctx.delete_calendar(calendar_id))

    @app.page("/_ml/calendars/{calendar_id}/jobs/{job_id}")
    class CalendarJobs(View):
        async def put(self, request, calendar_id, job_id):
            return await respond(self, lambda: ctx.calendar_jobs(calendar_id, job_id, add=True))

        async def delete(self, request, calendar_id, job_id):
            return await respond(self, lambda: ctx.calendar_jobs(calendar_id, job_id, add=False))

    @app.page("/_ml/calendars/{calendar_id}/events")
    class CalendarEvents(View):
        async def get(self, request, calendar_id):
            return await respond(self, lambda: _sync(ctx.get_events(calendar_id, dict(request.query))))

        async def post(self, request, calendar_id):
            async def go():
                return await ctx.post_events(calendar_id, await _body(request))
            return await respond(self, go)

    @app.page("/_ml/calendars/{calendar_id}/events/{event_id}")
    class CalendarEvent(View):
        async def delete(self, request, calendar_id, event_id):
            return await respond(self, lambda: ctx.delete_event(calendar_id, event_id))

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request):
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            metrics.JOBS_OPEN.set(sum(1 for s in worker.processor.slots.values() if s.engine is not None and not s.closed))
            return self.bytes(generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/debug/tasks")
    class Tasks(View):
        """Stacks of every asyncio task (diagnosing a stalled worker)."""

        async def get(self, request):
            import asyncio
            import io

            buf = io.StringIO()
            for task in asyncio.all_tasks():
                task.print_stack(limit=8, file=buf)
            return self.bytes(buf.getvalue().encode(), content_type="text/plain")

    @app.page("/healthz/live")
    class Live(View):
        async def get(self, request):
            return self.bytes(b'{"live":true}', content_type=JSON)

    @app.page("/healthz/ready")
    class Ready(View):
        async def get(self, request):
            ok = worker.registry.ready.is_set() and worker.ready and not app.rebalancing
            return self.bytes(orjson.dumps({"ready": ok}), content_type=JSON, status=200 if ok else 503)
