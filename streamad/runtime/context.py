"""Filters and calendars on the worker (ELASTIC_API §3.4, §3.5): what a job's rules and scheduled
events refer to, kept in the registry topic like jobs.

A job's engine never reads the registry: `open` carries the filters its rule scopes name and the
calendars that apply to it, and a change to either appends a `context` control message to every
opened job it touches. So the engine stays a function of its work log (replays are exact), and a
filter update reaches running jobs as Elastic's does.
"""

from __future__ import annotations

import uuid

from streamad.config.errors import ConfigError
from streamad.config.filters import Calendar, Filter, check_id
from streamad.config.job import Job


class ContextError(Exception):
    """An API error with Elastic's status and type (the REST layer turns it into the error JSON)."""

    def __init__(self, status: int, kind: str, reason: str):
        super().__init__(reason)
        self.status, self.kind, self.reason = status, kind, reason


def _missing(what: str, ident: str) -> ContextError:
    return ContextError(404, "resource_not_found_exception", f"No {what} with id [{ident}] exists")


def _page(items: list, params: dict, default_size: int) -> list:
    start = int(params.get("from", 0) or 0)
    size = int(params.get("size", default_size) or default_size)
    if start < 0 or size < 0:
        raise ContextError(400, "illegal_argument_exception", "[from] and [size] must not be negative")
    return items[start:start + size]


def _named_by(job_ids: set[str]):
    """Whether a job config is named by a calendar's job ids (its id, one of its groups, or `_all`)."""
    everyone = "_all" in job_ids
    return lambda cfg: (everyone or cfg.get("job_id") in job_ids
                        or any(g in job_ids for g in cfg.get("groups", [])))


class JobContext:
    """Filter and calendar API calls, and the context each job gets."""

    def __init__(self, worker):
        self.worker = worker
        self.registry = worker.registry

    # ------------------------------------------------------------------ what a job sees
    def filters(self) -> dict[str, Filter]:
        return {fid: Filter.from_dict(body, fid) for fid, body in self.registry.filters.items()}

    def for_job(self, job_config: dict) -> dict:
        """The `filters` (by id, those its rule scopes name) and `calendars` (those that apply to it)."""
        job = Job.from_dict(job_config)
        named = {scope.filter_id for det in job.detectors for rule in det.custom_rules for scope in rule.scope}
        filters = {fid: body for fid, body in sorted(self.registry.filters.items()) if fid in named}
        calendars = [body for cid, body in sorted(self.registry.calendars.items())
                     if Calendar.from_dict(body, cid).applies_to(job.job_id, job.groups)]
        return {"filters": filters, "calendars": calendars}

    async def _refresh_jobs(self, touches) -> None:
        """Send the new context to every opened job for which `touches(job_config)` is true."""
        for job_id, entry in sorted(self.registry.jobs.items()):
            if entry.get("state") == "opened" and touches(entry["config"]):
                await self.worker.send_control(job_id, "context", **self.for_job(entry["config"]))

    def _users(self, filter_id: str) -> list[str]:
        out = []
        for job_id, entry in sorted(self.registry.jobs.items()):
            for det in entry["config"].get("analysis_config", {}).get("detectors", []):
                for rule in det.get("custom_rules", []) or []:
                    if any(s.get("filter_id") == filter_id for s in (rule.get("scope") or {}).values()):
                        out.append(job_id)
        return sorted(set(out))

    # ------------------------------------------------------------------ filters
    def _filter(self, filter_id: str) -> dict:
        body = self.registry.filters.get(filter_id)
        if body is None:
            raise _missing("filter", filter_id)
        return body

    async def put_filter(self, filter_id: str, body: dict) -> dict:
        if filter_id in self.registry.filters:
            raise ContextError(400, "resource_already_exists_exception",
                               f"A filter with id [{filter_id}] already exists")
        if "filter_id" in body and body["filter_id"] != filter_id:
            raise ConfigError("filter_id", "id_mismatch",
                              f"filter_id [{body['filter_id']}] in the body differs from the URL's [{filter_id}]")
        doc = Filter.from_dict(body, filter_id).to_dict()
        doc.setdefault("description", "")
        await self.registry.put(f"filter/{filter_id}", doc)
        return doc

    def get_filters(self, filter_id: str | None, params: dict) -> dict:
        if filter_id in (None, "_all", "*"):
            total = len(self.registry.filters)
            docs = _page([self.registry.filters[f] for f in sorted(self.registry.filters)], params, 100)
        else:
            docs = [self._filter(f) for f in filter_id.split(",")]
            total = len(docs)
        return {"count": total, "filters": docs}

    async def update_filter(self, filter_id: str, body: dict) -> dict:
        old = self._filter(filter_id)
        items = set(old["items"])
        for name in ("add_items", "remove_items"):
            value = body.get(name, [])
            if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
                raise ConfigError(name, "string_list", f"{name} must be a list of strings")
        missing = [i for i in body.get("remove_items", []) if i not in items]
        if missing:
            raise ContextError(400, "illegal_argument_exception",
                               f"Cannot remove item [{missing[0]}] as it is not present in filter [{filter_id}]")
        items = (items | set(body.get("add_items", []))) - set(body.get("remove_items", []))
        description = body.get("description", old.get("description", ""))
        doc = Filter.from_dict({"items": sorted(items), "description": description}, filter_id).to_dict()
        doc.setdefault("description", "")
        await self.registry.put(f"filter/{filter_id}", doc)
        users = set(self._users(filter_id))
        await self._refresh_jobs(lambda cfg: cfg.get("job_id") in users)
        return doc

    async def delete_filter(self, filter_id: str) -> dict:
        self._filter(filter_id)
        users = self._users(filter_id)
        if users:
            raise ContextError(400, "illegal_argument_exception",
                               f"Cannot delete filter [{filter_id}] currently used by jobs {users}")
        await self.registry.put(f"filter/{filter_id}", None)
        return {"acknowledged": True}

    # ------------------------------------------------------------------ calendars
    def _calendar(self, calendar_id: str) -> dict:
        body = self.registry.calendars.get(calendar_id)
        if body is None:
            raise _missing("calendar", calendar_id)
        return body

    @staticmethod
    def _public(body: dict) -> dict:
        return {k: v for k, v in body.items() if k != "events"}

    async def _save_calendar(self, calendar_id: str, body: dict, affected: set[str]) -> None:
        Calendar.from_dict(body, calendar_id)  # validates job ids and events
        await self.registry.put(f"calendar/{calendar_id}", body)
        await self._refresh_jobs(_named_by(affected))

    async def put_calendar(self, calendar_id: str, body: dict) -> dict:
        check_id(calendar_id, "calendar_id")
        if calendar_id in self.registry.calendars:
            raise ContextError(400, "resource_already_exists_exception",
                               f"A calendar with id [{calendar_id}] already exists")
        job_ids = body.get("job_ids", [])
        if not isinstance(job_ids, list) or not all(isinstance(j, str) for j in job_ids):
            raise ConfigError("job_ids", "string_list", "job_ids must be a list of strings")
        doc = {"calendar_id": calendar_id, "job_ids": sorted(set(job_ids))}
        if body.get("description"):
            doc["description"] = str(body["description"])
        await self._save_calendar(calendar_id, {**doc, "events": []}, set(job_ids))
        return doc

    def get_calendars(self, calendar_id: str | None, params: dict) -> dict:
        if calendar_id in (None, "_all", "*"):
            ids = sorted(self.registry.calendars)
            total = len(ids)
            docs = _page([self._public(self.registry.calendars[c]) for c in ids], params, 10000)
        else:
            docs = [self._public(self._calendar(c)) for c in calendar_id.split(",")]
            total = len(docs)
        return {"count": total, "calendars": docs}

    async def delete_calendar(self, calendar_id: str) -> dict:
        body = self._calendar(calendar_id)
        await self.registry.put(f"calendar/{calendar_id}", None)
        await self._refresh_jobs(_named_by(set(body["job_ids"])))
        return {"acknowledged": True}

    async def calendar_jobs(self, calendar_id: str, job_ids: str, add: bool) -> dict:
        body = self._calendar(calendar_id)
        given = [j for j in job_ids.split(",") if j]
        now = set(body["job_ids"])
        now = now | set(given) if add else now - set(given)
        new = {**body, "job_ids": sorted(now)}
        await self._save_calendar(calendar_id, new, set(given) | set(body["job_ids"]))
        return self._public(new)

    async def post_events(self, calendar_id: str, body: dict) -> dict:
        cal = self._calendar(calendar_id)
        events = body.get("events")
        if not isinstance(events, list) or not events:
            raise ConfigError("events", "events_required", "events must be a non-empty list")
        added = []
        for i, ev in enumerate(events):
            if not isinstance(ev, dict) or not ev.get("description"):
                raise ConfigError(f"events[{i}].description", "required", "a scheduled event needs a description")
            parsed = Calendar.from_dict({"events": [ev]}, calendar_id).events[0]
            doc = {"description": parsed.description, "start_time": parsed.start_ms, "end_time": parsed.end_ms,
                   "skip_result": parsed.skip_result, "skip_model_update": parsed.skip_model_update,
                   "calendar_id": calendar_id, "event_id": uuid.uuid4().hex[:20]}
            added.append(doc)
        new = {**cal, "events": cal["events"] + added}
        await self._save_calendar(calendar_id, new, set(cal["job_ids"]))
        return {"events": added}

    def get_events(self, calendar_id: str, params: dict) -> dict:
        if calendar_id == "_all":
            cals = [self.registry.calendars[c] for c in sorted(self.registry.calendars)]
        else:
            cals = [self._calendar(calendar_id)]
        job_id = params.get("job_id")
        if job_id:
            entry = self.registry.jobs.get(job_id)
            groups = tuple(entry["config"].get("groups", [])) if entry else ()
            cals = [c for c in cals if Calendar.from_dict(c, c["calendar_id"]).applies_to(job_id, groups)]
        events = sorted((ev for c in cals for ev in c["events"]), key=lambda e: (e["start_time"], e["event_id"]))
        from streamad.runtime.results import _time_ms

        if params.get("start") not in (None, ""):
            lo = _time_ms(params["start"])
            events = [e for e in events if e["end_time"] > lo]
        if params.get("end") not in (None, ""):
            hi = _time_ms(params["end"])
            events = [e for e in events if e["start_time"] < hi]
        return {"count": len(events), "events": _page(events, params, 100)}

    async def delete_event(self, calendar_id: str, event_id: str) -> dict:
        cal = self._calendar(calendar_id)
        kept = [e for e in cal["events"] if e["event_id"] != event_id]
        if len(kept) == len(cal["events"]):
            raise _missing("scheduled event", event_id)
        await self._save_calendar(calendar_id, {**cal, "events": kept}, set(cal["job_ids"]))
        return {"acknowledged": True}
