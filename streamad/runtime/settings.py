"""Worker settings from `STREAMAD_*` environment variables (validated once, frozen)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    broker: str = "kafka://127.0.0.1:9092"
    web_host: str = "0.0.0.0"
    web_port: int = 6066
    data_dir: str = "streamad-data"
    app_id: str = "streamad"
    partitions: int = 8
    # comma-separated topics the router reads (datafeed `indices` name them; wildcards match within
    # this list). No regex subscription: Faust's pattern topics keep aiokafka refreshing metadata
    # in a busy loop (measured: 70-80 % of a core on an idle worker).
    input_topics: str = "streamad-events"
    work_topic: str = "streamad-work"
    shards_topic: str = "streamad-shards"  # internal: a job's models by partition value (`partitions` shards)
    jobs_topic: str = "streamad-jobs"
    results_topic: str = "streamad-results"
    annotations_topic: str = "streamad-annotations"
    dead_letter_topic: str = "streamad-dead-letter"
    output_partitions: int = 8
    jobs_dir: str = ""
    snapshot_events: int = 5000
    snapshot_seconds: float = 5.0
    lookback_save_seconds: float = 2.0  # how often a datafeed lookback records its progress
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str = ""
    static_member_id: str = ""  # Kafka static membership (a restart keeps its partitions)
    session_timeout: float = 30.0  # seconds before a silent worker's partitions move
    # how often the consumer refreshes topic metadata: an input topic created after the worker
    # started (or given partitions) is read from then on (Kafka's default, 5 min, left it unread)
    metadata_max_age: float = 30.0

    @property
    def bootstrap(self) -> str:
        """host:port list for plain aiokafka clients."""
        return ",".join(u.split("://", 1)[-1] for u in self.broker.split(";"))

    @classmethod
    def from_env(cls, env: dict | None = None) -> Settings:
        env = os.environ if env is None else env
        kw: dict = {}
        for name, f in cls.__dataclass_fields__.items():
            raw = env.get(f"STREAMAD_{name.upper()}")
            if raw is None:
                continue
            if f.type in ("int", int):
                try:
                    kw[name] = int(raw)
                except ValueError:
                    raise ValueError(f"STREAMAD_{name.upper()} must be an integer, got {raw!r}") from None
            elif f.type in ("float", float):
                kw[name] = float(raw)
            else:
                kw[name] = raw
        s = cls(**kw)
        if "://" not in s.broker:
            s = cls(**{**kw, "broker": ";".join(f"kafka://{b}" for b in s.broker.split(","))})
        if s.partitions < 1 or not (0 < s.web_port < 65536):
            raise ValueError("STREAMAD_PARTITIONS must be >= 1 and STREAMAD_WEB_PORT a port number")
        if not (1.0 <= s.metadata_max_age <= 3600.0):
            raise ValueError("STREAMAD_METADATA_MAX_AGE must be between 1 and 3600 seconds")
        return s

    def client_kwargs(self) -> dict:
        """Security settings for aiokafka clients."""
        kw: dict = {"security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            kw.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                      sasl_plain_password=self.sasl_password)
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            kw["ssl_context"] = create_ssl_context(cafile=self.ssl_cafile or None)
        return kw
