"""The same migrations on a real TimescaleDB server (PGlite/WASM build, see tests/support/timescale_server.py)."""

import psycopg
import pytest

from tests.support.processes import manage
from tests.support.timescale_server import timescale_server


@pytest.fixture(scope="module")
def timescale_url():
    with timescale_server() as dsn:
        yield dsn


def test_migrations_make_readings_a_compressed_hypertable_on_timescaledb(timescale_url):
    manage("migrate", "--noinput", database_url=timescale_url)

    with psycopg.connect(timescale_url, autocommit=True) as conn:
        dimension = conn.execute(
            "SELECT column_name, time_interval FROM timescaledb_information.dimensions"
            " WHERE hypertable_name = 'telemetry_reading'"
        ).fetchone()
        policy = conn.execute(
            "SELECT config->>'compress_after' FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_compression' AND hypertable_name = 'telemetry_reading'"
        ).fetchone()
        primary_key = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'telemetry_reading'::regclass AND contype = 'p'"
        ).fetchone()

    assert dimension[0] == "ts"
    assert str(dimension[1]) == "1 day, 0:00:00"
    assert policy == ("7 days",)
    # Upstream django-timescaledb drops the primary key; ours keeps it, so repeated readings stay idempotent.
    assert primary_key == ("PRIMARY KEY (series_id, ts)",)


def test_repeated_reading_is_stored_once_in_the_hypertable(timescale_url):
    manage("migrate", "--noinput", database_url=timescale_url)
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        for _ in range(2):
            conn.execute(
                "INSERT INTO telemetry_reading (series_id, ts, value) VALUES (1, '2026-11-01T00:00Z', 1.5)"
                " ON CONFLICT DO NOTHING"
            )
        bucket = conn.execute(
            "SELECT time_bucket('1 hour', ts), count(*) FROM telemetry_reading WHERE series_id = 1 GROUP BY 1"
        ).fetchall()
    assert len(bucket) == 1 and bucket[0][1] == 1


def test_doctor_reports_timescale_storage(timescale_url, broker):
    manage("migrate", "--noinput", database_url=timescale_url)
    report = manage("fieldwatch_doctor", database_url=timescale_url, MQTT_URL=broker.url).stdout
    assert "storage    timescale" in report
    assert "TimescaleDB 2.23" in report
    assert "readings hypertable: yes" in report
    assert "compression policy: yes" in report
