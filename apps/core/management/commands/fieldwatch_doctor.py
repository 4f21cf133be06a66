"""``manage.py fieldwatch_doctor``: what this installation runs on and whether its services answer."""

import platform

import django
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from apps.core.db import timescale
from apps.core.flags import flag_states
from apps.core.probes import probe_all


class Command(BaseCommand):
    help = (
        "Print the storage mode (timescale/plain), versions, and whether PostgreSQL, Redis and the MQTT broker "
        "answer (the broker: logging in as the listener), and the state of every feature flag."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--preflight",
            action="store_true",
            help="Only check that PostgreSQL and Redis answer and that Mosquitto can be started (works before the "
            "database exists and before the broker runs); used by `make run`.",
        )

    def handle(self, *args, preflight=False, **options):
        results = probe_all(preflight=preflight)
        failed = [result for result in results if not result.ok]
        for result in results:
            mark = self.style.SUCCESS("ok  ") if result.ok else self.style.ERROR("DOWN")
            self.stdout.write(f"{mark} {result.service:<12} {result.detail}")
        for result in failed:
            self.stdout.write(f"     start {result.service} with: {result.hint}")
        if failed:
            raise CommandError(f"{', '.join(result.service for result in failed)} not answering.")
        if preflight:
            return

        self.stdout.write(f"Python     {platform.python_version()}")
        self.stdout.write(f"Django     {django.get_version()}")
        for position, (name, state) in enumerate(flag_states()):
            self.stdout.write(f"{'flags' if position == 0 else '':<10} {name:<24} {state}")
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            self.stdout.write(f"PostgreSQL {cursor.fetchone()[0]} (database {connection.settings_dict['NAME']})")
            extension = timescale.extension_version(cursor)
            if extension is None:
                available = timescale.extension_available(cursor)
                self.stdout.write("storage    plain")
                self.stdout.write(
                    "           TimescaleDB is installed on the server but not created here; run migrate."
                    if available
                    else "           TimescaleDB is not installed on the server: readings are a plain table."
                )
                return
            self.stdout.write("storage    timescale")
            self.stdout.write(f"TimescaleDB {extension}")
            hypertable = timescale.is_hypertable(cursor, "telemetry_reading")
            compressed = hypertable and timescale.compression_policy_active(cursor, "telemetry_reading")
            self.stdout.write(f"           readings hypertable: {'yes' if hypertable else 'NO (run migrate)'}")
            self.stdout.write(f"           compression policy: {'yes' if compressed else 'no (not available)'}")
