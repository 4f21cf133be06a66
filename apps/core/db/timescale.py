"""Every TimescaleDB-only statement of the project, kept in one small module.

Fieldwatch runs fully on plain PostgreSQL >= 14. When the ``timescaledb`` extension is available the readings
table becomes a hypertable (1-day chunks) with compression of older chunks; nothing else depends on it, so the
plain and Timescale code paths differ only in the calls below.
"""

import logging

from django.db import DatabaseError, transaction

logger = logging.getLogger(__name__)


def extension_available(cursor) -> bool:
    """Whether the server could load the extension (installed on disk), whether or not it is created."""
    cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return cursor.fetchone() is not None


def extension_version(cursor) -> str | None:
    """The version of the ``timescaledb`` extension created in this database, or None on plain PostgreSQL."""
    cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    row = cursor.fetchone()
    return row[0] if row else None


def create_extension(cursor) -> None:
    cursor.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")


def create_hypertable(cursor, *, table: str, time_column: str, chunk_interval: str, migrate_data: bool) -> None:
    cursor.execute(
        "SELECT create_hypertable(%s, %s, chunk_time_interval => %s::interval,"
        " migrate_data => %s, if_not_exists => TRUE)",
        [table, time_column, chunk_interval, migrate_data],
    )


def set_chunk_interval(cursor, *, table: str, chunk_interval: str) -> None:
    cursor.execute("SELECT set_chunk_time_interval(%s, %s::interval)", [table, chunk_interval])


def is_hypertable(cursor, table: str) -> bool:
    cursor.execute("SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = %s", [table])
    return cursor.fetchone() is not None


def enable_compression(connection, *, table: str, segment_by: str, order_by: str, compress_after: str) -> bool:
    """Compress chunks older than ``compress_after``; return whether the policy is in place.

    The Apache-licensed TimescaleDB build (and some managed offerings) has no compression. Migrations must still
    succeed there, so the statements run in a savepoint and a refusal is logged and reported, not raised.
    """
    quoted = connection.ops.quote_name(table)
    try:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute(
                f"ALTER TABLE {quoted} SET (timescaledb.compress,"
                f" timescaledb.compress_segmentby = %s, timescaledb.compress_orderby = %s)",
                [segment_by, order_by],
            )
            cursor.execute(
                "SELECT add_compression_policy(%s, %s::interval, if_not_exists => TRUE)", [table, compress_after]
            )
    except DatabaseError as error:
        logger.warning("TimescaleDB compression is not available here, %s stays uncompressed: %s", table, error)
        return False
    return True


def compression_policy_active(cursor, table: str) -> bool:
    cursor.execute(
        "SELECT 1 FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression' AND hypertable_name = %s",
        [table],
    )
    return cursor.fetchone() is not None


def drop_chunks(cursor, *, table: str, older_than) -> int:
    """Drop the chunks of ``table`` whose whole time range is before ``older_than``; return how many were dropped."""
    cursor.execute("SELECT count(*) FROM drop_chunks(%s::regclass, older_than => %s::timestamptz)", [table, older_than])
    return cursor.fetchone()[0]
