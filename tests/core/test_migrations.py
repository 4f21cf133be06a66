"""Migrations from zero on an empty plain PostgreSQL database, and the doctor's report of it."""

import uuid

import psycopg
import pytest
from django.db import connection
from psycopg import sql

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


def test_migrations_from_zero_build_the_schema_on_plain_postgresql(empty_database):
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

    doctor = manage("fieldwatch_doctor", database_url=url).stdout
    assert "storage    plain" in doctor
    for service in ("PostgreSQL", "Redis", "MQTT broker"):
        assert f"ok   {service}" in doctor


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
