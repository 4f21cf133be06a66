"""Rollup and series-query benchmark on a year of generated readings; prints one JSON object (see bench/README.md).

    python bench/timeseries.py [--days 365] [--series 50] [--json-out bench-ts.json] [--database-url …] [--keep]

On a scratch PostgreSQL database (``fieldwatch_bench_ts``, created, migrated in a subprocess and dropped unless
``--keep`` or ``--database-url``) it generates ``--series`` series x ``--days`` days at 1-minute resolution with
``INSERT ... SELECT generate_series`` (values computed in SQL), then measures, in this process:

- the rollup engine (``rollups_advance``) from scratch over the whole history, and incrementally on two batches;
- ``GET /api/v1/series`` (Django test client, superuser) for the whole range x every series at ``auto`` and for a
  24-hour raw read of one series, against the same queries hand-written in psycopg;
- the JSON and MessagePack sizes of those responses.

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
import psycopg
from _support import ScratchDatabase, argument_parser, catalogue_seed, log, machine_facts, result_print

from apps.core.time import epoch_ms, epoch_ms_sql

SCRATCH_DB = "fieldwatch_bench_ts"
METRICS = [f"m{i}" for i in range(5)]  # metrics per device: --series 50 is 10 devices x 5 metrics
REPEATS = 7
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


def _stats(samples: list[float]) -> dict:
    return {
        "median_ms": round(statistics.median(samples) * 1000, 2),
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

    def run(self, days: int, series: int) -> dict:
        # Data ends two UTC midnights ago: every range is in the past (so cacheable, as real historical charts are)
        # and both incremental batches (about 34 h after the end) are still before the real now.
        today = datetime.datetime.now(datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.end = today - datetime.timedelta(days=2)
        self.start = self.end - datetime.timedelta(days=days)
        result: dict = {}
        try:
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
                "repeats": REPEATS,
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
        from django.test import Client

        client = Client(HTTP_HOST="localhost")
        client.force_login(self.user)
        start_ms, end_ms = epoch_ms(self.start), epoch_ms(self.end)
        day_ms = 86_400_000
        wide = {"series": ",".join(uids), "start": start_ms, "end": end_ms}
        raw = {"series": uids[0], "start": end_ms - day_ms, "end": end_ms, "interval": "raw"}
        log("queries: whole range x every series at auto")
        wide_figures = self._api(client, wide)
        interval = wide_figures["interval"]
        wide_sql = (
            f"SELECT series_id, {epoch_ms_sql('bucket')}, sum / count FROM telemetry_rollup_{interval}"
            " WHERE series_id = ANY(%s) AND bucket >= %s AND bucket < %s ORDER BY series_id, bucket"
        )
        wide_figures["sql"] = self._sql(wide_sql, [ids, self.start, self.end], wide_figures["points"])
        log("queries: 24 h raw of one series")
        raw_figures = self._api(client, raw)
        raw_sql = (
            f"SELECT {epoch_ms_sql('ts')}, value FROM telemetry_reading"
            " WHERE series_id = %s AND ts >= %s AND ts < %s ORDER BY ts"
        )
        day_before = self.end - datetime.timedelta(days=1)
        raw_figures["sql"] = self._sql(raw_sql, [ids[0], day_before, self.end], raw_figures["points"])
        for figures in (wide_figures, raw_figures):
            figures["ratio_api_over_sql_median"] = round(
                figures["api_uncached"]["median_ms"] / figures["sql"]["median_ms"], 2
            )
        wide_figures["query"] = f"{len(ids)} series x {(self.end - self.start).days} days, interval=auto, agg=avg"
        raw_figures["query"] = "1 series x 24 h, interval=raw"
        return wide_figures, raw_figures

    def _api(self, client, params: dict) -> dict:
        """Time GET /api/v1/series: uncached (cache generation bumped before each run) and cached; sizes."""
        from apps.telemetry.queries import series_cache_invalidate

        url = f"/api/v1/series?{urlencode(params)}"
        response = client.get(url)  # warm-up (imports, connection, plans), not timed
        if response.status_code != 200:
            raise SystemExit(f"GET {url[:200]} answered {response.status_code}: {response.content[:300]!r}")
        uncached, cached = [], []
        for _ in range(REPEATS):
            series_cache_invalidate()
            started = time.perf_counter()
            response = client.get(url)
            uncached.append(time.perf_counter() - started)
            assert response.status_code == 200, response.status_code
        json_body = response.content
        for _ in range(REPEATS):
            started = time.perf_counter()
            response = client.get(url)
            cached.append(time.perf_counter() - started)
        series_cache_invalidate()
        msgpack_response = client.get(url, HTTP_ACCEPT="application/msgpack")
        assert msgpack_response["Content-Type"].startswith("application/msgpack"), msgpack_response["Content-Type"]
        payload = json.loads(json_body)
        json_bytes, msgpack_bytes = len(json_body), len(msgpack_response.content)
        return {
            "interval": payload["interval"],
            "points": sum(len(series["points"]) for series in payload["series"]),
            "api_uncached": _stats(uncached),
            "api_cached": _stats(cached),
            "bytes": {
                "json": json_bytes,
                "msgpack": msgpack_bytes,
                "msgpack_saving_percent": round(100 * (1 - msgpack_bytes / json_bytes), 1),
            },
            "method": "django.test.Client GET in-process (session auth as a superuser, all middleware, DRF rendering)"
            "; wall time of client.get; 1 warm-up; uncached = cache generation bumped before each run (so the "
            "selector misses, queries, hashes and stores the entry in Redis); cached = Redis hit",
        }

    def _sql(self, sql: str, params: list, points: int) -> dict:
        """The hand-written statement on a plain psycopg connection: execute + fetchall, 1 warm-up, REPEATS runs.

        Timed with psycopg's default text results and with binary results (what the API's ``queries.rows_fetch``
        asks for); the ratio is taken against the faster, so it shows the API's own overhead over the best plain fetch.
        """
        figures = {}
        with psycopg.connect(self.url, autocommit=True) as connection:
            for label, binary in (("text", False), ("binary", True)):
                cursor = connection.cursor()
                rows = cursor.execute(sql, params, binary=binary).fetchall()
                if len(rows) != points:
                    raise SystemExit(f"hand-written SQL returned {len(rows)} rows, the API {points} points")
                samples = []
                for _ in range(REPEATS):
                    started = time.perf_counter()
                    cursor.execute(sql, params, binary=binary).fetchall()
                    samples.append(time.perf_counter() - started)
                figures[label] = _stats(samples)
        best = min(figures.values(), key=lambda stats: stats["median_ms"])
        return {**figures, "median_ms": best["median_ms"], "statement": " ".join(sql.split()), "rows": points}

    # --- summary ----------------------------------------------------------------------------------------------------
    @staticmethod
    def _targets(result: dict) -> dict:
        wide = result["query_365d_auto"]
        load = result["rollup_incremental"]["b_ingest_30s_at_100k"]
        return {
            "wide_query_le_100_ms": wide["api_uncached"]["median_ms"] <= 100,
            "wide_query_le_1_5x_sql": wide["ratio_api_over_sql_median"] <= 1.5,
            "incremental_rollup_ge_100k_readings_per_s": load["readings_per_s"] >= 100_000,
        }


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--series", type=int, default=50, help=f"Series, {len(METRICS)} per device.")
    parser.add_argument("--keep", action="store_true", help="Do not drop the scratch database at the end.")
    args = parser.parse_args()
    if not 1 <= args.series <= 50:
        parser.error("--series must be 1..50 (one request of GET /api/v1/series takes at most 50)")
    _django.setup()
    result_print(TimeseriesBenchmark(args.database_url, args.keep).run(args.days, args.series), args.json_out)


if __name__ == "__main__":
    main()
