"""django-timescaledb's backend, made safe for plain PostgreSQL.

Upstream assumes the extension exists: ``prepare_database`` runs ``CREATE EXTENSION`` unconditionally (failing
with "could not open extension control file" where it is not installed) and every ``TimescaleDateTimeField``
turns its table into a hypertable. Here both happen only when the server offers the extension; otherwise the
same migrations create ordinary tables. Upstream also drops the table's primary key before ``create_hypertable``;
Fieldwatch keeps it, because the readings key ``(series_id, ts)`` contains the partition column (which TimescaleDB
accepts) and is what makes a repeated reading idempotent.
"""

from timescale.db.backends.postgresql import base as timescale_base
from timescale.db.backends.postgresql.schema import TimescaleSchemaEditor

from apps.core.db import timescale


class DatabaseSchemaEditor(TimescaleSchemaEditor):
    def _timescale_enabled(self) -> bool:
        with self.connection.cursor() as cursor:
            return timescale.extension_version(cursor) is not None

    def _create_hypertable(self, model, field, should_migrate=False):
        if not self._timescale_enabled():
            return
        with self.connection.cursor() as cursor:
            timescale.create_hypertable(
                cursor,
                table=model._meta.db_table,
                time_column=field.column,
                chunk_interval=field.interval,
                migrate_data=should_migrate,
            )

    def _set_chunk_time_interval(self, model, field):
        if not self._timescale_enabled():
            return
        with self.connection.cursor() as cursor:
            timescale.set_chunk_interval(cursor, table=model._meta.db_table, chunk_interval=field.interval)


class DatabaseWrapper(timescale_base.DatabaseWrapper):
    SchemaEditorClass = DatabaseSchemaEditor

    def prepare_database(self):
        # Skip upstream's unconditional CREATE EXTENSION; create it only where the server can load it.
        super(timescale_base.DatabaseWrapper, self).prepare_database()
        with self.cursor() as cursor:
            if timescale.extension_available(cursor):
                timescale.create_extension(cursor)

    @property
    def storage_mode(self) -> str:
        """``timescale`` when the extension is created in this database, else ``plain``."""
        with self.cursor() as cursor:
            return "timescale" if timescale.extension_version(cursor) else "plain"
