"""Statements on psycopg directly, with server-side binary parameters and results, inside Django's transaction.

Django's cursor binds parameters client-side and reads results as text, and its text timestamptz loader is pure
Python: for the hot paths (the ingest flush, series queries, the alert outbox) that cost more than the statements
themselves. Binary results use psycopg's C loaders, and server-side parameters let psycopg prepare a statement after
a few executions. Statements are still logged in Django's query log (tests count them) and raise Django's
exceptions, and they run on Django's connection, so ``transaction.atomic`` covers them.
"""

import time
from collections.abc import Sequence
from contextlib import contextmanager

import psycopg
from django.db import connection


def binary_cursor() -> psycopg.Cursor:
    connection.ensure_connection()
    return psycopg.Cursor(connection.connection)  # not the connection's cursor_factory: Django sets ClientCursor


@contextmanager
def logged_statement(sql: str):
    """Django's error wrapping and query log around a statement run on the raw connection (e.g. a COPY)."""
    started = time.monotonic()
    try:
        with connection.wrap_database_errors:
            yield
    finally:
        if connection.queries_logged:
            connection.queries_log.append({"sql": sql, "time": f"{time.monotonic() - started:.3f}"})


def binary_execute(cursor: psycopg.Cursor, sql: str, params: Sequence | None = None) -> None:
    with logged_statement(sql):
        cursor.execute(sql, params, binary=True)


def rows_fetch(sql: str, params: Sequence | None = None) -> list[tuple]:
    """All rows of one statement, binary."""
    with binary_cursor() as cursor:
        binary_execute(cursor, sql, params)
        return cursor.fetchall()
