"""``manage.py ensure_database``: create the configured PostgreSQL database when it does not exist yet."""

import psycopg
from django.core.management.base import BaseCommand
from django.db import connection
from psycopg import sql

from apps.core.probes import _server_dsn


class Command(BaseCommand):
    help = "Create the configured database if it is missing (idempotent)."

    def handle(self, *args, **options):
        name = connection.settings_dict["NAME"]
        # CREATE DATABASE cannot run in a transaction, hence autocommit on the maintenance database.
        with psycopg.connect(_server_dsn(), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                self.stdout.write(f"Database {name} exists.")
                return
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.stdout.write(self.style.SUCCESS(f"Created database {name}."))
