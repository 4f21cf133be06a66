"""Migrations from zero on an empty plain PostgreSQL database, and the doctor's report of it."""

import uuid

import psycopg
import pytest
from django.db import connection
from psycopg import sql

from tests.support.ports import free_port
from tests.support.processes import manage


@pytest.fixture
def empty_database(django_db_blocker):
    """A brand-new database on the local server, dropped afterwards; its URL."""
    with django_db_blocker.unblock():
        params = connection.get_connection_params()
    name = f"fw_migrate_{uuid.uuid4().hex[:10]}"
    server = {"dbname": "postgres", "host": params.get("host") or "", "port": params.get("port") or ""}
    server = {key: value for key, value in server.items() if value}
    with psycopg.connect(**server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    host = params.get("host") or ""
    yield f"postgres://{host}/{name}", name, server
    with psycopg.connect(**server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_migrations_from_zero_build_the_schema_on_plain_postgresql(empty_database, broker):
    url, name, server = empty_database
    manage("migrate", "--noinput", database_url=url)

    with psycopg.connect(**{**server, "dbname": name}) as conn:
        primary_key = conn.execute(
            """
            SELECT array_agg(a.attname ORDER BY array_position(i.indkey, a.attnum))
            FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
            WHERE i.indrelid = 'telemetry_reading'::regclass AND i.indisprimary
            """
        ).fetchone()[0]
        roles = {row[0] for row in conn.execute("SELECT name FROM auth_group")}
        extension = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()

    assert primary_key == ["series_id", "ts"]
    assert roles == {"admin", "operator", "viewer"}
    assert extension is None

    doctor = manage("fieldwatch_doctor", database_url=url, MQTT_URL=broker.url).stdout
    assert "storage    plain" in doctor
    for service in ("PostgreSQL", "Redis", "MQTT broker"):
        assert f"ok   {service}" in doctor
    assert "logged in as fw-test-listener" in doctor  # the broker admits nobody anonymous, the doctor neither


def test_preflight_needs_no_broker_but_a_free_port_for_the_one_make_run_starts(empty_database, broker):
    url, _, _ = empty_database
    free = manage("fieldwatch_doctor", "--preflight", database_url=url, MQTT_URL=f"mqtt://127.0.0.1:{free_port()}")
    assert "ok   Mosquitto    mosquitto version 2." in free.stdout
    with pytest.raises(AssertionError) as failure:
        manage("fieldwatch_doctor", "--preflight", database_url=url, MQTT_URL=broker.url)
    assert f"DOWN Mosquitto    127.0.0.1:{broker.port} is taken" in str(failure.value)


def test_doctor_reports_a_broker_that_refuses_the_listener(empty_database, broker):
    url, _, _ = empty_database
    with pytest.raises(AssertionError) as failure:
        manage("fieldwatch_doctor", database_url=url, MQTT_URL=broker.url.replace("//", "//fw-test-listener:wrong@"))
    assert "DOWN MQTT broker" in str(failure.value) and "wrong" not in str(failure.value).split("DOWN")[1]


def test_models_and_migrations_are_in_step():
    manage("makemigrations", "--check", "--dry-run")


def test_doctor_names_a_service_that_is_down_and_how_to_start_it(empty_database):
    url, _, _ = empty_database
    with pytest.raises(AssertionError) as failure:
        manage("fieldwatch_doctor", "--preflight", database_url=url, REDIS_URL="redis://127.0.0.1:1/0")
    output = str(failure.value)
    assert "DOWN Redis" in output
    assert "redis-server --daemonize yes" in output
    assert "ok   PostgreSQL" in output
