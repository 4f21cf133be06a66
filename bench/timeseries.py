"""Rollup and series-query benchmark on a year of generated readings; prints one JSON object (see bench/README.md).

    python bench/timeseries.py [--days 365] [--series 50] [--json-out bench-ts.json] [--database-url …] [--keep]
                               [--queries-only]

On a scratch PostgreSQL database (``fieldwatch_bench_ts``, created, migrated in a subprocess and dropped unless
``--keep`` or ``--database-url``) it generates ``--series`` series x ``--days`` days at 1-minute resolution with
``INSERT ... SELECT generate_series`` (values computed in SQL), then measures, in this process:

- the rollup engine (``rollups_advance``) from scratch over the whole history, and incrementally on two batches;
- ``GET /api/v1/series`` (Django test client, superuser) for the whole range x every series at ``auto`` and for a
  24-hour raw read of one series, against the same queries hand-written in psycopg, and beside a view that reads
  nothing (the framework's floor for an authenticated request);
- the JSON, MessagePack and columnar (``application/vnd.fieldwatch.series.v2+msgpack``) sizes of those responses,
  and the time Chromium takes to decode the columnar body beside ``JSON.parse`` of the JSON one.

``--queries-only`` measures the queries again on a database a previous run kept (``--keep`` or ``--database-url``),
without generating or rolling up anything.

Progress goes to stderr, one JSON object to stdout (and ``--json-out``).
"""

import datetime
import json
import math
import os
import queue
import statistics
import threading
import time
from urllib.parse import urlencode

import _django  # before any import from the checkout: sys.path, DEBUG off
import msgpack
import psycopg
from _support import ScratchDatabase, argument_parser, catalogue_seed, log, machine_facts, result_print

from apps.core.time import epoch_ms, epoch_ms_sql

SCRATCH_DB = "fieldwatch_bench_ts"
METRICS = [f"m{i}" for i in range(5)]  # metrics per device: --series 50 is 10 devices x 5 metrics
BENCH_DEVICE_TYPE = "Bench type"  # what _support.catalogue_seed names it
QUERY_REPEATS = 21  # per query and format: enough for a p95 that is not just the maximum of a handful
BROWSER_REPEATS = 30  # samples of BROWSER_BATCH decodes each (Chromium's clock is coarsened to 0.1 ms)
BROWSER_BATCH = 10
CHROMIUM = "/usr/bin/chromium"
SERIES_COLUMNS = "application/vnd.fieldwatch.series.v2+msgpack"
# Accept header per encoding the API offers (renderer format -> media type)
ENCODINGS = {"json": "application/json", "msgpack": "application/msgpack", "columns": SERIES_COLUMNS}
WRITERS = 2  # generating connections (the machines we run on have 2 vCPUs)
# Incremental batch "ingest shape": 1 Hz readings of LOAD_SERIES series for LOAD_SECONDS = 3,000,000 readings, what
# 30 s of ingest at 100,000 readings/s leaves for one rollup run, as the rollup engineer measured it.
LOAD_DEVICES = 5000
LOAD_SECONDS = 120
# Incremental batch "history shape": this many more minutes of the generated series (100,000 readings for 50).
HISTORY_MINUTES = 2000

# One series, minute by minute: a seasonal and a daily cycle, a slow random walk (a running sum of noise) and
# measurement noise, rounded to 3 decimals as a sensor would report. Parameters differ per series; setseed makes a
# series the same in every run. The window's sort is over generate_series, so rows come out in (series, ts) order
# and every index insertion lands at the right edge of the series' key range.
_GENERATE = """
    INSERT INTO telemetry_reading (series_id, ts, value)
    SELECT %(series)s, %(start)s::timestamptz + g * interval '1 minute' + %(jitter)s * interval '1 second',
           round((%(base)s + %(season)s * sin(2 * pi() * g / 525600.0)
                  + %(daily)s * sin(2 * pi() * ((g + %(phase)s) %% 1440) / 1440.0)
                  + %(walk)s * sum(random() - 0.5) OVER (ORDER BY g)
                  + %(noise)s * (random() - 0.5)) * 1000) / 1000
    FROM generate_series(0, %(minutes)s - 1) AS g
    ORDER BY g
"""

# The load batch: every load series at 1 Hz over [start, start + seconds).
_GENERATE_LOAD = """
    INSERT INTO telemetry_reading (series_id, ts, value)
    SELECT s.id, %(start)s::timestamptz + g * interval '1 second', round((20 + (s.id %% 50) + random()) * 1000) / 1000
    FROM telemetry_series s CROSS JOIN generate_series(0, %(seconds)s - 1) AS g
    WHERE s.id = ANY(%(ids)s::int4[])
    ORDER BY s.id, g
"""


FLOOR_PATH = "/bench-framework-floor"


def _floor_urlconf():
    """The project's URLs plus ``FLOOR_PATH``: a DRF view with the project's default authentication, permissions and
    JSON renderer that reads nothing and answers ``{}``, so the request's fixed cost (middleware, session, user, DRF)
    is timed beside the series requests that pay it too."""
    import types

    from django.urls import include, path
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from apps.core.api.renderers import FastJSONRenderer

    class FrameworkFloor(APIView):
        renderer_classes = [FastJSONRenderer]

        def get(self, request):
            return Response({})

    module = types.ModuleType("bench_floor_urls")
    module.urlpatterns = [path(FLOOR_PATH.lstrip("/"), FrameworkFloor.as_view()), path("", include("config.urls"))]
    return module


def _stats(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(samples) * 1000, 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)] * 1000, 2),
        "min_ms": round(min(samples) * 1000, 2),
        "max_ms": round(max(samples) * 1000, 2),
        "runs": len(samples),
    }


class TimeseriesBenchmark:
    def __init__(self, database_url: str | None, keep: bool):
        self.scratch = ScratchDatabase(SCRATCH_DB, database_url, keep=keep)
        self.url = self.scratch.url
        self.db = None
        self.cache = None

    def run(self, days: int, series: int, queries_only: bool = False) -> dict:
        # Data ends two UTC midnights ago: every range is in the past (so cacheable, as real historical charts are)
        # and both incremental batches (about 34 h after the end) are still before the real now.
        today = datetime.datetime.now(datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.end = today - datetime.timedelta(days=2)
        self.start = self.end - datetime.timedelta(days=days)
        result: dict = {}
        try:
            if queries_only:
                self.db = psycopg.connect(self.url, autocommit=True)
                self._use_database()
                ids, uids = self._kept(series, days)
                result["machine"] = self._machine()
                result["query_365d_auto"], result["query_24h_raw"] = self._queries(ids, uids)
                result["targets"] = self._targets(result)
            else:
                self.scratch.create()
                self.db = psycopg.connect(self.url, autocommit=True)
                self._use_database()
                ids, uids = self._seed(series)
                result["machine"] = self._machine()
                result["dataset"] = self._generate(ids, days)
                result["rollup_from_scratch"] = self._rollup_from_scratch()
                result["query_365d_auto"], result["query_24h_raw"] = self._queries(ids, uids)
                result["rollup_incremental"] = self._rollup_incremental(ids)
                result["targets"] = self._targets(result)
            result["settings"] = {
                "days": days,
                "series": series,
                "database": self.url,
                "scratch_database_dropped": self.scratch.dropped,
                "django_settings": os.environ["DJANGO_SETTINGS_MODULE"],
                "debug_during_queries": False,
                "query_repeats": QUERY_REPEATS,
                "queries_only": queries_only,
            }
        except KeyboardInterrupt:
            log("interrupted; cleaning up")
            raise
        finally:
            self._cleanup()
        return result

    # --- infrastructure ---------------------------------------------------------------------------------------------
    def _use_database(self) -> None:
        """Point Django's default connection at the benchmark database and the cache at a private key prefix.

        The prefix keeps the benchmark's responses and cache generation away from the machine's own (the cache is
        created lazily per thread; everything here runs in this thread).
        """
        from django.core.cache import caches

        self.scratch.use()
        self.cache = caches["default"]
        self.cache.key_prefix = f"fw-bench-ts-{os.getpid()}"

    def _cleanup(self) -> None:
        if self.cache is not None:
            from apps.telemetry.queries import CACHE_GENERATION_KEY

            try:
                self.cache.delete(CACHE_GENERATION_KEY)  # cached responses under the prefix expire within the hour
            except Exception as error:  # noqa: BLE001 - cleanup must go on
                log(f"could not delete the cache generation key: {error}")
        if self.db is not None:
            self.db.close()
        self.scratch.drop()

    def _machine(self) -> dict:
        pg_settings = ("shared_buffers", "work_mem", "max_parallel_workers_per_gather", "synchronous_commit", "jit")
        return machine_facts(self.db, pg_settings)

    # --- data -------------------------------------------------------------------------------------------------------
    def _seed(self, series: int) -> tuple[list[int], list[str]]:
        """The bench catalogue with gauges m0..m4 in °C, devices and their series; a superuser.

        Series are created here (ingest would create them on first reading). Returns the series ids and their
        ``uid:metric`` names, in the same order.
        """
        from django.contrib.auth import get_user_model

        from apps.devices.models import Device
        from apps.telemetry.models import Series

        site, device_type = catalogue_seed(METRICS, unit="°C")
        self.site, self.device_type = site, device_type
        self._precision_declare()
        devices = Device.objects.bulk_create(
            Device(uid=f"bts-{i:05d}", name=f"bts-{i:05d}", site=site, device_type=device_type)
            for i in range(math.ceil(series / len(METRICS)))
        )
        pairs = [(device, key) for device in devices for key in METRICS][:series]
        rows = Series.objects.bulk_create(Series(device=device, metric_key=key) for device, key in pairs)
        user = get_user_model()(username="bench-ts", is_superuser=True, is_staff=True)
        user.set_unusable_password()
        user.save()
        self.user = user
        return [row.id for row in rows], [f"{device.uid}:{key}" for device, key in pairs]

    @staticmethod
    def _precision_declare() -> None:
        """The generator rounds to 3 decimals, as a sensor resolving 0.001 would report: declare it (the columnar
        layout then sends float32 where that keeps every value within 0.0005)."""
        from apps.devices.models import MetricDefinition

        MetricDefinition.objects.filter(device_type__name=BENCH_DEVICE_TYPE, key__in=METRICS).update(precision=3)

    def _kept(self, series: int, days: int) -> tuple[list[int], list[str]]:
        """The series, user and range of a database a previous run kept: ``_seed``'s order, its start and end."""
        from django.contrib.auth import get_user_model

        from apps.telemetry.models import Series

        rows = list(
            Series.objects.filter(device__uid__startswith="bts-", metric_key__in=METRICS)
            .order_by("device__uid", "metric_key")
            .values_list("id", "device__uid", "metric_key")[:series]
        )
        if len(rows) < series:
            raise SystemExit(f"{self.url} holds {len(rows)} benchmark series; run once with --keep first")
        self.user = get_user_model().objects.get(username="bench-ts")
        self._precision_declare()
        first_sql = "SELECT min(ts) FROM telemetry_reading WHERE series_id = %s"
        first = self.db.execute(first_sql, [rows[0][0]]).fetchone()[0]
        self.start = first.replace(hour=0, minute=0, second=0, microsecond=0)  # readings start a few seconds late
        self.end = self.start + datetime.timedelta(days=days)
        log(f"reusing {len(rows)} series from {self.start:%Y-%m-%d} to {self.end:%Y-%m-%d}")
        return [row[0] for row in rows], [f"{uid}:{key}" for _, uid, key in rows]

    def _generate(self, ids: list[int], days: int) -> dict:
        """All readings of the history, one statement per series over WRITERS connections, then VACUUM ANALYZE.

        INSERT ... SELECT generate_series rather than COPY from Python: the values never cross the wire and the
        server does the arithmetic, well over the rate a Python loop encoding binary COPY rows reaches.
        """
        minutes = days * 1440
        log(f"generating {len(ids)} series x {days} days = {len(ids) * minutes:,} readings")
        work: queue.Queue = queue.Queue()
        for index, series_id in enumerate(ids):
            work.put(
                {
                    "series": series_id,
                    "start": self.start,
                    "jitter": index % 60,  # devices do not all report on the minute
                    "base": 10 + (index * 7) % 60,
                    "season": 2 + index % 9,
                    "daily": 1 + index % 5,
                    "phase": (index * 97) % 1440,
                    "walk": 0.02,
                    "noise": 0.2,
                    "minutes": minutes,
                    "seed": ((index * 0.137) % 1.0) * 2 - 1,
                }
            )
        errors: list[BaseException] = []

        def writer():
            try:
                with psycopg.connect(self.url, autocommit=True) as connection:
                    while True:
                        try:
                            params = work.get_nowait()
                        except queue.Empty:
                            return
                        with connection.transaction():
                            connection.execute("SELECT setseed(%s)", [params["seed"]])
                            connection.execute(_GENERATE, params)
            except BaseException as error:  # noqa: BLE001 - reported in the main thread
                errors.append(error)

        started = time.perf_counter()
        threads = [threading.Thread(target=writer) for _ in range(WRITERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        insert_seconds = time.perf_counter() - started
        log(f"inserted in {insert_seconds:.1f} s; VACUUM ANALYZE")
        started = time.perf_counter()
        self.db.execute("VACUUM ANALYZE telemetry_reading")
        vacuum_seconds = time.perf_counter() - started
        rows = self.db.execute("SELECT count(*) FROM telemetry_reading").fetchone()[0]
        size = self.db.execute("SELECT pg_total_relation_size('telemetry_reading')").fetchone()[0]
        return {
            "method": f"INSERT ... SELECT generate_series, values computed in SQL, one statement per series, "
            f"{WRITERS} connections in parallel, into the migrated telemetry_reading (primary key in place)",
            "readings": rows,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "insert_seconds": round(insert_seconds, 1),
            "insert_readings_per_s": round(rows / insert_seconds),
            "vacuum_analyze_seconds": round(vacuum_seconds, 1),
            "table_size_mb": round(size / 2**20),
        }

    # --- rollups ----------------------------------------------------------------------------------------------------
    def _advance(self, now: datetime.datetime, label: str) -> dict:
        """``rollups_advance`` in a loop until caught up; the sum of what the runs report, and the wall time."""
        from apps.telemetry.rollups import RESOLUTIONS, rollups_advance

        totals = {"readings": 0, "transactions": 0, "runs": 0, "buckets": dict.fromkeys(RESOLUTIONS, 0)}
        started = time.perf_counter()
        while True:
            figures = rollups_advance(now=now, time_budget=60.0)
            if "skipped" in figures:
                raise SystemExit(f"rollups_advance skipped: {figures['skipped']}")
            totals["runs"] += 1
            totals["readings"] += figures["readings"]
            totals["transactions"] += figures["transactions"]
            for resolution, count in figures["buckets"].items():
                totals["buckets"][resolution] += count
            log(f"{label}: {totals['readings']:,} readings rolled up, until {figures['watermarks']['1m']}")
            if figures["caught_up"]:
                break
        seconds = time.perf_counter() - started
        totals["seconds"] = round(seconds, 3)
        totals["readings_per_s"] = round(totals["readings"] / seconds)
        return totals

    def _rollup_from_scratch(self) -> dict:
        from apps.telemetry.rollups import GRACE

        figures = self._advance(self.end + GRACE, "from scratch")  # closes exactly up to self.end
        # Autovacuum would have analyzed tables that grew this much long before anyone queried a year of them.
        self.db.execute("ANALYZE telemetry_rollup_1m, telemetry_rollup_5m, telemetry_rollup_1h, telemetry_rollup_1d")
        sizes = self.db.execute(
            "SELECT pg_total_relation_size('telemetry_rollup_1m'), pg_total_relation_size('telemetry_rollup_5m'),"
            " pg_total_relation_size('telemetry_rollup_1h'), pg_total_relation_size('telemetry_rollup_1d')"
        ).fetchone()
        figures["table_sizes_mb"] = dict(
            zip(("1m", "5m", "1h", "1d"), [round(s / 2**20, 1) for s in sizes], strict=True)
        )
        figures["note"] = "rollups_advance(now=end + GRACE, time_budget=60) repeated until caught_up"
        return figures

    def _rollup_incremental(self, ids: list[int]) -> dict:
        """Two batches after the history, each rolled up by one catching-up call as the beat job would."""
        from apps.devices.models import Device
        from apps.telemetry.models import Series
        from apps.telemetry.rollups import GRACE

        # (a) history shape: HISTORY_MINUTES more minutes of the generated series.
        log(f"incremental (a): {HISTORY_MINUTES} minutes x {len(ids)} series")
        history_end = self.end + datetime.timedelta(minutes=HISTORY_MINUTES)
        inserted = self.db.execute(
            "INSERT INTO telemetry_reading (series_id, ts, value)"
            " SELECT s, %s::timestamptz + g * interval '1 minute', round(random() * 1000) / 10"
            " FROM unnest(%s::int4[]) AS s CROSS JOIN generate_series(0, %s - 1) AS g ORDER BY s, g",
            [self.end, ids, HISTORY_MINUTES],
        ).rowcount
        history = self._advance(history_end + GRACE, "incremental (a)")
        history["inserted"] = inserted
        history["shape"] = f"{HISTORY_MINUTES} minutes x {len(ids)} series at 1/min"

        # (b) ingest shape: 30 s of 100,000 readings/s, as 1 Hz readings of many series for LOAD_SECONDS.
        devices = Device.objects.bulk_create(
            Device(uid=f"load-{i:05d}", name=f"load-{i:05d}", site=self.site, device_type=self.device_type)
            for i in range(LOAD_DEVICES)
        )
        load_ids = [
            row.id
            for row in Series.objects.bulk_create(
                Series(device=device, metric_key=key) for device in devices for key in METRICS
            )
        ]
        self.db.execute("ANALYZE telemetry_series")  # in production these series would have existed for a while
        log(f"incremental (b): {len(load_ids)} series x {LOAD_SECONDS} s at 1 Hz")
        started = time.perf_counter()
        inserted = self.db.execute(
            _GENERATE_LOAD, {"start": history_end, "seconds": LOAD_SECONDS, "ids": load_ids}
        ).rowcount
        insert_seconds = time.perf_counter() - started
        load = self._advance(history_end + datetime.timedelta(seconds=LOAD_SECONDS) + GRACE, "incremental (b)")
        load["inserted"] = inserted
        load["insert_seconds"] = round(insert_seconds, 1)
        load["shape"] = (
            f"{len(load_ids)} series x {LOAD_SECONDS} s at 1 Hz = 30 s of 100,000 readings/s; "
            f"{len(load_ids) + len(ids)} series in telemetry_series"
        )
        return {"a_history_minutes": history, "b_ingest_30s_at_100k": load}

    # --- queries ----------------------------------------------------------------------------------------------------
    def _queries(self, ids: list[int], uids: list[str]) -> tuple[dict, dict]:
        from django.test import Client, override_settings

        from apps.telemetry import queries

        client = Client(HTTP_HOST="localhost")
        client.force_login(self.user)
        floor_urls = override_settings(ROOT_URLCONF=_floor_urlconf())
        floor_urls.enable()
        start_ms, end_ms = epoch_ms(self.start), epoch_ms(self.end)
        day_ms = 86_400_000
        wide = {"series": ",".join(uids), "start": start_ms, "end": end_ms}
        raw = {"series": uids[0], "start": end_ms - day_ms, "end": end_ms, "interval": "raw"}

        def wide_sql(interval: str) -> list[tuple]:
            rows = (
                f"SELECT series_id, {epoch_ms_sql('bucket')}, sum / count FROM telemetry_rollup_{interval}"
                " WHERE series_id = ANY(%s) AND bucket >= %s AND bucket < %s ORDER BY series_id, bucket"
            )
            # What the API sends the database for this request (one row of arrays per series).
            statement = queries.columns_sql(
                queries.rollup_sql(interval=interval, aggregates=["avg"], tz="UTC"), values=1
            )
            params = [ids, self.start, self.end]
            return [
                ("text", rows, params, False),
                ("binary", rows, params, True),
                ("api_statement", statement, params, True),
            ]

        def raw_sql(interval: str) -> list[tuple]:
            rows = (
                f"SELECT {epoch_ms_sql('ts')}, value FROM telemetry_reading"
                " WHERE series_id = %s AND ts >= %s AND ts < %s ORDER BY ts"
            )
            day_before = self.end - datetime.timedelta(days=1)
            statement = queries.columns_sql(queries.RAW_SQL, values=1)
            params = [ids[0], day_before, self.end]
            return [
                ("text", rows, params, False),
                ("binary", rows, params, True),
                ("api_statement", statement, [[ids[0]], day_before, self.end, 10**9], True),
            ]

        log("queries: whole range x every series at auto")
        wide_figures = self._api(client, wide, wide_sql)
        log("queries: 24 h raw of one series")
        raw_figures = self._api(client, raw, raw_sql)
        for figures in (wide_figures, raw_figures):
            sql = figures["sql"]
            figures["ratio_api_over_sql_median"] = round(figures["api_uncached"]["median_ms"] / sql["median_ms"], 2)
            figures["ratio_api_over_same_statement_median"] = round(
                figures["api_uncached"]["median_ms"] / sql["api_statement"]["median_ms"], 2
            )
            figures["ratio_columns_api_over_sql_median"] = round(
                figures["by_encoding"]["columns"]["api_uncached"]["median_ms"] / sql["median_ms"], 2
            )
            figures["ratio_framework_floor_over_sql_median"] = round(
                figures["framework_floor"]["median_ms"] / sql["median_ms"], 2
            )
        log("queries: decoding in Chromium")
        wide_figures["browser_decode"] = self._browser_decode(client, wide)
        floor_urls.disable()
        wide_figures["query"] = f"{len(ids)} series x {(self.end - self.start).days} days, interval=auto, agg=avg"
        raw_figures["query"] = "1 series x 24 h, interval=raw"
        return wide_figures, raw_figures

    def _api(self, client, params: dict, sql_for) -> dict:
        """Time GET /api/v1/series in each encoding, uncached (cache generation bumped before each run) and cached,
        and the hand-written SQL of the same rows (``sql_for(interval)``: label, statement, parameters, binary) on a
        plain psycopg connection, all interleaved run by run so the machine's load falls on each alike; sizes."""
        from apps.telemetry.queries import series_cache_invalidate

        url = f"/api/v1/series?{urlencode(params)}"
        bodies = {}
        for encoding, accept in ENCODINGS.items():  # warm-up (imports, connection, plans), not timed
            response = client.get(url, HTTP_ACCEPT=accept)
            if response.status_code != 200:
                raise SystemExit(f"GET {url[:200]} answered {response.status_code}: {response.content[:300]!r}")
            if not response["Content-Type"].startswith(accept):
                raise SystemExit(f"asked for {accept}, got {response['Content-Type']}")
            bodies[encoding] = response.content
        payload = json.loads(bodies["json"])
        points = sum(len(series["points"]) for series in payload["series"])
        variants = sql_for(payload["interval"])
        uncached = {encoding: [] for encoding in ENCODINGS}
        cached = {encoding: [] for encoding in ENCODINGS}
        sql = {label: [] for label, *_ in variants}
        floor = []
        assert client.get(FLOOR_PATH).status_code == 200  # warm-up
        with psycopg.connect(self.url, autocommit=True) as connection:
            cursor = connection.cursor()
            for label, statement, values, binary in variants:  # warm-up, and the same rows as the API's
                rows = cursor.execute(statement, values, binary=binary).fetchall()
                fetched = sum(len(row[1]) for row in rows) if label == "api_statement" else len(rows)
                if fetched != points:
                    raise SystemExit(f"{label} SQL returned {fetched} points, the API {points}")
            for _ in range(QUERY_REPEATS):
                for encoding, accept in ENCODINGS.items():
                    series_cache_invalidate()
                    started = time.perf_counter()
                    response = client.get(url, HTTP_ACCEPT=accept)
                    uncached[encoding].append(time.perf_counter() - started)
                    assert response.status_code == 200, response.status_code
                    bodies[encoding] = response.content
                for label, statement, values, binary in variants:
                    started = time.perf_counter()
                    cursor.execute(statement, values, binary=binary).fetchall()
                    sql[label].append(time.perf_counter() - started)
                started = time.perf_counter()
                client.get(FLOOR_PATH)
                floor.append(time.perf_counter() - started)
        for _ in range(QUERY_REPEATS):
            for encoding, accept in ENCODINGS.items():
                started = time.perf_counter()
                response = client.get(url, HTTP_ACCEPT=accept)
                cached[encoding].append(time.perf_counter() - started)
                assert response.content == bodies[encoding]
        series_cache_invalidate()
        columns = msgpack.unpackb(bodies["columns"])
        if sum(series["count"] for series in columns["series"]) != points:
            raise SystemExit("the columnar body holds another number of points than the JSON one")
        sizes = {encoding: len(body) for encoding, body in bodies.items()}
        sql_figures = {label: _stats(samples) for label, samples in sql.items()}
        return {
            "interval": payload["interval"],
            "points": points,
            "api_uncached": _stats(uncached["json"]),
            "api_cached": _stats(cached["json"]),
            # The same client's GET of a view that reads nothing: what any authenticated request costs.
            "framework_floor": _stats(floor),
            "by_encoding": {
                encoding: {"api_uncached": _stats(uncached[encoding]), "api_cached": _stats(cached[encoding])}
                for encoding in ENCODINGS
            },
            "sql": {
                **sql_figures,
                # The faster of text and binary: the ratio shows the API's overhead over the best plain fetch.
                "median_ms": min(sql_figures["text"]["median_ms"], sql_figures["binary"]["median_ms"]),
                "statement": " ".join(variants[0][1].split()),
                "api_statement_sql": " ".join(variants[2][1].split()),
                "rows": points,
            },
            "columns_types": sorted({kind for series in columns["series"] for kind in series["types"]}),
            "bytes": {
                **sizes,
                "msgpack_saving_percent": round(100 * (1 - sizes["msgpack"] / sizes["json"]), 1),
                "columns_saving_percent": round(100 * (1 - sizes["columns"] / sizes["json"]), 1),
            },
            "method": "django.test.Client GET in-process (session auth as a superuser, all middleware, DRF "
            "negotiation, the series view's encoders); wall time of client.get; 1 warm-up; uncached = cache "
            "generation bumped before each run (so the body is fetched, encoded and stored in Redis); cached = "
            "Redis hit; json, msgpack and columns requests and the hand-written SQL (execute + fetchall on a plain "
            "psycopg connection, text and binary results, and the API's own statement) interleaved run by run",
        }

    def _browser_decode(self, client, params: dict) -> dict:
        """Chromium (Playwright): ``JSON.parse`` of the JSON body beside ``fieldwatchSeries.decodeColumns`` of the
        columnar one (static/fieldwatch/series_client.js, what the dashboard's charts use), interleaved, each sample
        a batch of BROWSER_BATCH; the bodies are handed to the page first (not timed)."""
        import base64
        from pathlib import Path

        from playwright.sync_api import sync_playwright

        if not Path(CHROMIUM).exists():
            return {"skipped": f"{CHROMIUM} is not installed"}
        url = f"/api/v1/series?{urlencode(params)}"
        text = client.get(url, HTTP_ACCEPT=ENCODINGS["json"]).content.decode()
        packed = base64.b64encode(client.get(url, HTTP_ACCEPT=SERIES_COLUMNS).content).decode()
        script = Path(_django.REPO_ROOT, "static/fieldwatch/series_client.js")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.add_script_tag(path=str(script))
                figures = page.evaluate(
                    """([text, packed, repeats, batch]) => {
                        const buffer = Uint8Array.from(atob(packed), (c) => c.charCodeAt(0)).buffer;
                        const decode = window.fieldwatchSeries.decodeColumns;
                        const points = (body) => body.series.reduce((n, s) => n + s.points.length, 0);
                        const decoded = (body) => body.series.reduce((n, s) => n + s.ts.length, 0);
                        const same = points(JSON.parse(text)) === decoded(decode(buffer));
                        if (!same) throw new Error("point counts differ");
                        const json = [], columns = [];
                        for (let i = 0; i < 3; i++) { JSON.parse(text); decode(buffer); }  // warm-up (JIT)
                        for (let r = 0; r < repeats; r++) {
                            let t = performance.now();
                            for (let b = 0; b < batch; b++) JSON.parse(text);
                            json.push((performance.now() - t) / batch);
                            t = performance.now();
                            for (let b = 0; b < batch; b++) decode(buffer);
                            columns.push((performance.now() - t) / batch);
                        }
                        const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
                        return {json_parse_ms: median(json), columns_decode_ms: median(columns)};
                    }""",
                    [text, packed, BROWSER_REPEATS, BROWSER_BATCH],
                )
                version = browser.version
            finally:
                browser.close()
        return {
            "json_parse_median_ms": round(figures["json_parse_ms"], 3),
            "columns_decode_median_ms": round(figures["columns_decode_ms"], 3),
            "ratio_columns_over_json": round(figures["columns_decode_ms"] / figures["json_parse_ms"], 2),
            "chromium": version,
            "method": f"median of {BROWSER_REPEATS} samples, each {BROWSER_BATCH} decodes, interleaved; JSON.parse of "
            "the JSON body vs fieldwatchSeries.decodeColumns (typed arrays) of the columnar body",
        }

    # --- summary ----------------------------------------------------------------------------------------------------
    @staticmethod
    def _targets(result: dict) -> dict:
        wide = result["query_365d_auto"]
        raw = result["query_24h_raw"]
        targets = {
            "wide_query_le_100_ms": wide["api_uncached"]["median_ms"] <= 100,
            "wide_query_le_1_5x_sql": wide["ratio_api_over_sql_median"] <= 1.5,
            "wide_query_cached_le_30_ms": wide["api_cached"]["median_ms"] <= 30,
            "raw_24h_le_2x_sql": raw["ratio_api_over_sql_median"] <= 2,
            "columns_ge_60_percent_smaller_than_json": wide["bytes"]["columns_saving_percent"] >= 60,
        }
        decode = wide.get("browser_decode", {})
        if "ratio_columns_over_json" in decode:
            targets["browser_columns_decode_le_json_parse"] = decode["ratio_columns_over_json"] <= 1
        if "rollup_incremental" in result:
            load = result["rollup_incremental"]["b_ingest_30s_at_100k"]
            targets["incremental_rollup_ge_100k_readings_per_s"] = load["readings_per_s"] >= 100_000
        return targets


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--series", type=int, default=50, help=f"Series, {len(METRICS)} per device.")
    parser.add_argument("--keep", action="store_true", help="Do not drop the scratch database at the end.")
    parser.add_argument(
        "--queries-only",
        action="store_true",
        help="Measure the queries on the data a previous run kept (--keep, or its --database-url); no generation.",
    )
    args = parser.parse_args()
    if args.queries_only and not args.database_url:
        args.database_url = None  # the kept scratch database
    if not 1 <= args.series <= 50:
        parser.error("--series must be 1..50 (one request of GET /api/v1/series takes at most 50)")
    _django.setup()
    benchmark = TimeseriesBenchmark(args.database_url, args.keep or args.queries_only)
    result_print(benchmark.run(args.days, args.series, args.queries_only), args.json_out)


if __name__ == "__main__":
    main()
