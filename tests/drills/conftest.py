"""Shared pieces of the drills (issue 12): a broker of each drill's own, since drills stop and restart it, with one
load-generator login that may publish for every device, and a counted window of readings in PostgreSQL."""

import uuid

import psycopg
import pytest

from tests.support.broker import Broker

LOAD_GENERATOR = ("drill-load", "drill-load-password")


@pytest.fixture
def own_broker():
    broker = Broker(prefix=f"drl{uuid.uuid4().hex[:6]}", load_generators=dict([LOAD_GENERATOR]))
    broker.start()
    yield broker
    broker.close()


def stored(database_url: str, first_ts_ms: int, last_ts_ms: int) -> int:
    """Readings stored with timestamps in [first, last] (the drill's own window), counted in PostgreSQL. The primary
    key (series, ts) makes a redelivered reading a counted duplicate, never a second row."""
    query = (
        "SELECT count(*) FROM telemetry_reading "
        "WHERE ts >= to_timestamp(%s / 1000.0) AND ts <= to_timestamp(%s / 1000.0)"
    )
    with psycopg.connect(database_url, autocommit=True) as connection:
        return connection.execute(query, [first_ts_ms, last_ts_ms]).fetchone()[0]
