"""Shared fixtures. Kafka fixtures start the real broker through scripts/kafka when none answers.

A broker that cannot be started is a test failure (in CI and locally alike): never a skip.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bootstrap() -> str:
    port = os.environ.get("STREAMAD_KAFKA_PORT", "9092")
    return os.environ.get("STREAMAD_KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The broker's "host:port"; starts it with scripts/kafka if it is not answering."""
    env = dict(os.environ)
    status = subprocess.run([str(ROOT / "scripts" / "kafka"), "status"], env=env, capture_output=True, text=True)
    if status.returncode != 0:
        started = subprocess.run(
            [str(ROOT / "scripts" / "kafka"), "start", "--fresh"], env=env, capture_output=True, text=True,
            timeout=180
        )
        if started.returncode != 0:
            pytest.fail(f"Kafka broker unavailable and could not be started:\n{started.stdout}\n{started.stderr}")
    return _bootstrap()


@pytest.fixture
def topic_name():
    """Unique topic names per test, so tests never see each other's data."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture
def create_topics(kafka_bootstrap):
    """Create topics with N partitions on the real broker: `create_topics({"name": 4})`."""

    def create(spec: dict[str, int], config: dict[str, str] | None = None) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        async def go():
            admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
            await admin.start()
            try:
                await admin.create_topics(
                    [NewTopic(n, p, 1, topic_configs=config or {}) for n, p in spec.items()]
                )
            finally:
                await admin.close()

        asyncio.run(go())

    return create
