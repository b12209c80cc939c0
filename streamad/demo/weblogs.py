"""A generator of realistic web-server access logs with planted incidents (our own, deterministic).

Traffic follows a daily shape (quiet nights, busy afternoons) and a weekly one (lighter weekends);
clients and URLs have Zipf-like popularity; responses are mostly 200 with some 304/404/503; bytes
are log-normal. Three incidents are planted in the last week, each for one sample job to find:
a client scanning many distinct URLs (url_scanning), a burst of 404s from one client
(response_code_rates), and an outage hour with almost no traffic (low_request_rate).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

HOUR = 3600
DAY = 86400
START = 1700438400  # 2023-11-20T00:00:00Z, a Monday


@dataclass(frozen=True)
class Incident:
    job_id: str
    kind: str
    start: int  # epoch seconds of the hour
    entity: str  # the client ip or response code the incident is about ("" for job-wide)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _rate(t: float, base: float) -> float:
    hour = (t % DAY) / HOUR
    dow = int(((t - START) // DAY) % 7)
    daily = 0.35 + 1.25 * math.exp(-((hour - 15.0) ** 2) / (2 * 4.0**2))
    weekly = 0.7 if dow >= 5 else 1.0
    return base * daily * weekly


def incidents(days: int = 28) -> list[Incident]:
    last_week = START + (days - 7) * DAY
    return [
        Incident("url_scanning", "scan", last_week + 2 * DAY + 14 * HOUR, "10.99.1.7"),
        Incident("response_code_rates", "404_burst", last_week + 4 * DAY + 3 * HOUR, "404"),
        Incident("low_request_rate", "outage", last_week + 5 * DAY + 11 * HOUR, ""),
    ]


def generate(days: int = 28, base_rate: float = 60.0, seed: int = 7):
    """Yield (epoch seconds, document) in time order."""
    rng = random.Random(seed)
    clients = [f"{rng.randint(11, 220)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
               for _ in range(400)]
    client_w = [1.0 / (k + 1) ** 0.9 for k in range(len(clients))]
    sections = ["", "products", "blog", "docs", "cart", "account", "search", "static/css", "static/js", "images"]
    urls = [f"https://www.example.com/{rng.choice(sections)}/{w}" for w in
            (f"item-{k}" for k in range(300))]
    url_w = [1.0 / (k + 1) ** 1.1 for k in range(len(urls))]
    planted = {i.kind: i for i in incidents(days)}
    events: list[tuple[float, dict]] = []
    for hour in range(days * 24):
        t0 = START + hour * HOUR
        n = _poisson(rng, _rate(t0 + HOUR / 2, base_rate))
        if t0 == planted["outage"].start:
            n = 2
        for _ in range(n):
            t = t0 + rng.random() * HOUR
            r = rng.random()
            code = 200 if r < 0.88 else 304 if r < 0.95 else 404 if r < 0.99 else 503
            events.append((t, _doc(t, rng.choices(clients, client_w)[0], rng.choices(urls, url_w)[0], code, rng)))
        if t0 == planted["scan"].start:
            ip = planted["scan"].entity
            for k in range(60):
                t = t0 + 600 + k * 20 + rng.random()
                events.append((t, _doc(t, ip, f"https://www.example.com/{rng.choice(['admin', 'wp-admin', 'cgi-bin', 'backup', '.git'])}/{k}", 200, rng)))
        if t0 == planted["404_burst"].start:
            ip = "10.66.6.6"
            for k in range(150):
                t = t0 + 300 + k * 15 + rng.random()
                events.append((t, _doc(t, ip, f"https://www.example.com/missing/{k % 5}", 404, rng)))
    events.sort(key=lambda e: e[0])
    yield from events


def _doc(t: float, ip: str, url: str, code: int, rng: random.Random) -> dict:
    return {
        "timestamp": _iso(t),
        "clientip": ip,
        "url": url,
        "response": code,
        "bytes": int(rng.lognormvariate(8.5, 0.8)) if code != 304 else 0,
        "agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "event": {"dataset": "sample_web_logs"},
    }


def _poisson(rng: random.Random, lam: float) -> int:
    if lam > 30:
        return max(int(round(rng.gauss(lam, math.sqrt(lam)))), 0)
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def write_ndjson(path: str, days: int = 28, base_rate: float = 60.0, seed: int = 7) -> int:
    n = 0
    with open(path, "wb") as f:
        for _, doc in generate(days, base_rate, seed):
            f.write(orjson.dumps(doc) + b"\n")
            n += 1
    return n
