"""What the benchmarks share after ``_django``: a scratch database, the catalogue they seed, the facts of the
machine, progress on stderr and one JSON object on stdout."""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import _django
import psycopg


def log(message: str) -> None:
    print(f"[{Path(sys.argv[0]).stem} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def argument_parser(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark on a scratch database has; the script adds its own."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default=None, help="An empty database to use and keep (default: a scratch one, dropped)."
    )
    parser.add_argument("--json-out", default=None, help="Also write the JSON result to this file.")
    return parser


def result_print(result: dict, json_out: str | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if json_out:
        Path(json_out).write_text(text + "\n")


def server_url(name: str) -> str:
    """A URL for database ``name`` on the server the configured default database lives on."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    user = quote(db.get("USER") or "", safe="")
    password = quote(db.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if user and password else (f"{user}@" if user else "")
    host = db.get("HOST") or ""
    if host.startswith("/"):
        return f"postgres://{auth}/{name}?host={quote(host, safe='')}" + (
            f"&port={db['PORT']}" if db.get("PORT") else ""
        )
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{name}"


class ScratchDatabase:
    """``url`` when given (used as it is and kept), else database ``name`` on the configured server, created empty by
    ``create()`` and dropped by ``drop()`` unless ``keep``. Only that one database is ever touched."""

    def __init__(self, name: str, url: str | None = None, keep: bool = False):
        self.name = name
        self.owned = url is None
        self.dropped = self.owned and not keep
        self.url = url or server_url(name)

    def create(self, env: dict | None = None) -> None:
        """(Re)create the scratch database and migrate it in a child process, as a deployment would."""
        if self.owned:
            self._admin(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)", f"CREATE DATABASE {self.name}")
        log(f"migrating {self.url}")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=_django.REPO_ROOT,
            env={**os.environ, **(env or {}), "DATABASE_URL": self.url},
            check=True,
        )

    def use(self) -> None:
        """Point this process's default Django connection at the database."""
        import dj_database_url
        from django.db import connections

        parsed = dj_database_url.parse(self.url)
        connections.close_all()
        connections["default"].settings_dict.update(
            {key: parsed.get(key, "") for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT")}
        )

    def drop(self) -> None:
        from django.db import connections

        connections.close_all()
        if not self.dropped:
            return
        try:
            self._admin(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        except psycopg.Error as error:
            log(f"could not drop {self.name}: {error}")

    @staticmethod
    def _admin(*statements: str) -> None:
        with psycopg.connect(server_url("postgres"), autocommit=True) as admin:
            for statement in statements:
                admin.execute(statement)


def catalogue_seed(metrics: list[str], unit: str = ""):
    """One organization, site (UTC) and device type with gauges ``metrics`` ranged ±1e12, so nothing is rejected.

    bulk_create only: no catalogue signal fires, so nothing reaches the machine's own cache. Returns (site, type).
    """
    from django.db import connection

    from apps.devices.choices import MetricKind
    from apps.devices.models import Device, DeviceType, MetricDefinition, Site
    from apps.users.models import Organization

    if Device.objects.exists():
        raise SystemExit(
            f"{connection.settings_dict['NAME']} has devices already; the benchmark needs a fresh database"
        )
    (organization,) = Organization.objects.bulk_create([Organization(name="Bench", slug="bench")])
    (site,) = Site.objects.bulk_create([Site(organization=organization, name="Bench site", timezone="UTC")])
    (device_type,) = DeviceType.objects.bulk_create([DeviceType(organization=organization, name="Bench type")])
    MetricDefinition.objects.bulk_create(
        MetricDefinition(
            device_type=device_type,
            key=key,
            display_name=key,
            kind=MetricKind.GAUGE,
            unit=unit,
            min_value=-1e12,
            max_value=1e12,
        )
        for key in metrics
    )
    return site, device_type


def machine_facts(db: psycopg.Connection, pg_settings: tuple[str, ...]) -> dict:
    facts = {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "postgresql": db.execute("SHOW server_version").fetchone()[0],
        "timescaledb": db.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
    for name in pg_settings:
        facts[f"pg_{name}"] = db.execute(f"SHOW {name}").fetchone()[0]
    return facts


def plain_copy_baseline(db: psycopg.Connection) -> dict:
    """Every row of ``telemetry_reading`` copied out, then binary-``COPY``ed from memory into a table like it (one
    transaction): the cost of merely storing those rows, the floor for anything that ingests them."""
    buffer = bytearray()
    with db.cursor().copy("COPY telemetry_reading (series_id, ts, value) TO STDOUT (FORMAT binary)") as copy:
        for block in copy:
            buffer += block
    db.execute("DROP TABLE IF EXISTS bench_copy")
    db.execute("CREATE TABLE bench_copy (LIKE telemetry_reading INCLUDING ALL)")
    data = bytes(buffer)
    started = time.perf_counter()
    statement = "COPY bench_copy (series_id, ts, value) FROM STDIN (FORMAT binary)"
    with db.transaction(), db.cursor().copy(statement) as copy:
        for offset in range(0, len(data), 1 << 20):
            copy.write(data[offset : offset + (1 << 20)])
    elapsed = time.perf_counter() - started
    copied = db.execute("SELECT count(*) FROM bench_copy").fetchone()[0]
    db.execute("DROP TABLE bench_copy")
    return {
        "rows": copied,
        "seconds": round(elapsed, 3),
        "readings_per_s": round(copied / elapsed),
        "note": "client-side binary COPY into CREATE TABLE (LIKE telemetry_reading INCLUDING ALL), one transaction, "
        "data pre-loaded in memory",
    }
