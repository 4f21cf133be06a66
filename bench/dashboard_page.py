"""Page timings of saved charts: a dashboard of 8 charts (6 series each, one year) on a fleet of 1,000 devices with a
year of rollups, and the chart builder; prints one JSON object (see bench/README.md).

    python bench/dashboard_page.py [--devices 1000] [--charts 8] [--series-per-chart 6] [--json-out f.json]

On a scratch database (``fieldwatch_bench_board``, migrated in a subprocess, dropped at the end) it creates the
fleet (5 gauges per device), one year of 1-hour and 1-day rollups for the charted series (``INSERT ... SELECT
generate_series``), an operator of the site (permissions through django-guardian, as bob's), the charts and the
dashboard. Then, in this process with DEBUG off (Django test client, session auth):

- the dashboard page itself, and the whole dashboard as a browser loads it: the page plus the 8 series requests its
  script makes (``Accept: application/msgpack``, interval ``auto``), uncached (cache generation bumped each round);
- the same 8 statements hand-written on a plain psycopg connection, for the ratio;
- the chart builder page (it lists every device and metric the user may chart).
"""

import os
import statistics
import subprocess
import time

import _django  # before any import from the checkout: sys.path, DEBUG off
import psycopg
from _support import ScratchDatabase, argument_parser, catalogue_seed, log, machine_facts, result_print

from apps.core.time import epoch_ms, epoch_ms_sql

SCRATCH_DB = "fieldwatch_bench_board"
METRICS = [f"m{i}" for i in range(5)]
RUNS = 21

# A year of hourly and daily buckets per series, values from a daily sine (what the series API reads for 1 y / 30 d).
_ROLLUPS = """
    INSERT INTO telemetry_rollup_{table} (series_id, bucket, count, sum, sum_sq, min, max,
                                          first_ts, first_value, last_ts, last_value)
    SELECT s, b, n, v * n, v * v * n, v - 1, v + 1, b, v, b + interval '{step}' - interval '1 second', v
    FROM unnest(%(series)s::int[]) AS s
    CROSS JOIN generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '{step}', interval '{step}') AS b
    CROSS JOIN LATERAL (SELECT 20 + 5 * sin(extract(epoch FROM b) / 13751 + s) AS v, {count} AS n) x
"""


def _stats(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[max(0, round(0.95 * len(ordered)) - 1)] * 1000, 2),
        "min_ms": round(ordered[0] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "runs": len(ordered),
    }


def _seed(devices: int, charts: int, per_chart: int):
    import datetime

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from apps.dashboard.chart_services import chart_save, dashboard_chart_add, dashboard_save
    from apps.devices.models import Device
    from apps.devices.services import user_grant_site
    from apps.telemetry.models import Series
    from apps.users.choices import Role
    from apps.users.services import user_set_role

    site, device_type = catalogue_seed(METRICS, unit="kW")
    fleet = Device.objects.bulk_create(
        Device(uid=f"bb-{n:05d}", name=f"Device {n}", site=site, device_type=device_type) for n in range(devices)
    )
    Series.objects.bulk_create(Series(device=d, metric_key=m) for d in fleet for m in METRICS)
    user = get_user_model().objects.create_user(username="bench-operator", organization=site.organization)
    user_set_role(user=user, role=Role.OPERATOR)
    user_grant_site(user=user, site=site, operate=True)
    end = timezone.now().replace(minute=0, second=0, microsecond=0) - datetime.timedelta(days=1)
    end = end.replace(hour=0)
    start = end - datetime.timedelta(days=365)
    board = dashboard_save(user=user, title="Eight charts", shared=True)
    charted = []
    for c in range(charts):
        series = [(fleet[c * per_chart + k], METRICS[k % len(METRICS)]) for k in range(per_chart)]
        charted += series
        chart = chart_save(
            user=user, title=f"Chart {c}", shared=True, series=series, range="custom", range_start=start, range_end=end
        )
        dashboard_chart_add(user=user, dashboard=board, chart=chart)
    ids = list(Series.objects.filter(device__in=[d for d, _ in charted]).values_list("id", "device__uid", "metric_key"))
    wanted = {(d.uid, m) for d, m in charted}
    return user, board, start, end, [i for i, uid, m in ids if (uid, m) in wanted]


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--charts", type=int, default=8)
    parser.add_argument("--series-per-chart", type=int, default=6)
    args = parser.parse_args()
    _django.setup()
    from django.core.cache import caches
    from django.db import connection
    from django.test import Client

    from apps.dashboard.chart_selectors import chart_configs
    from apps.telemetry.queries import series_cache_invalidate

    scratch = ScratchDatabase(SCRATCH_DB, args.database_url)
    scratch.create()
    try:
        scratch.use()
        caches["default"].key_prefix = f"fw-bench-board-{os.getpid()}"
        log(f"seeding {args.devices} devices, {args.charts} charts x {args.series_per_chart} series")
        user, board, start, end, series_ids = _seed(args.devices, args.charts, args.series_per_chart)
        with connection.cursor() as cursor:
            for table, step, count in (("1h", "1 hour", 60), ("1d", "1 day", 1440)):
                cursor.execute(
                    _ROLLUPS.format(table=table, step=step, count=count),
                    {"series": series_ids, "start": start, "end": end},
                )
            cursor.execute("ANALYZE")
        client = Client(HTTP_HOST="localhost")
        client.force_login(user)
        page_url = f"/dashboards/{board.pk}/"
        charts = [item.chart for item in board.items.select_related("chart").order_by("position")]
        configs = chart_configs(charts)
        requests = [
            "/api/v1/series?"
            + "&".join(
                [
                    "series=" + ",".join(f"{s['device']}:{s['metric']}" for s in configs[chart.pk]["series"]),
                    f"start={epoch_ms(start)}",
                    f"end={epoch_ms(end)}",
                    "interval=auto",
                    "agg=avg",
                ]
            )
            for chart in charts
        ]
        page, whole, series_only, builder = [], [], [], []
        points = 0
        intervals = set()
        for run in range(RUNS + 1):  # the first round warms up (imports, plans, connections) and is not counted
            series_cache_invalidate()
            began = time.perf_counter()
            response = client.get(page_url)
            assert response.status_code == 200, response.status_code
            after_page = time.perf_counter()
            for url in requests:
                answer = client.get(url, HTTP_ACCEPT="application/msgpack")
                assert answer.status_code == 200, (answer.status_code, answer.content[:200])
                if run == 0:
                    import msgpack

                    payload = msgpack.unpackb(answer.content)
                    points += sum(len(s["points"]) for s in payload["series"])
                    intervals.add(payload["interval"])
            done = time.perf_counter()
            b0 = time.perf_counter()
            assert client.get("/charts/new").status_code == 200
            b1 = time.perf_counter()
            if run:
                page.append(after_page - began)
                series_only.append(done - after_page)
                whole.append(done - began)
                builder.append(b1 - b0)
        (interval,) = intervals
        sql = (
            f"SELECT series_id, {epoch_ms_sql('bucket')}, sum / count FROM telemetry_rollup_{interval}"
            " WHERE series_id = ANY(%s) AND bucket >= %s AND bucket < %s ORDER BY series_id, bucket"
        )
        per_chart = [
            series_ids[i : i + args.series_per_chart] for i in range(0, len(series_ids), args.series_per_chart)
        ]
        hand = []
        with psycopg.connect(scratch.url, autocommit=True) as plain:
            for run in range(RUNS + 1):
                began = time.perf_counter()
                for ids in per_chart:
                    plain.execute(sql, [ids, start, end], binary=True).fetchall()
                if run:
                    hand.append(time.perf_counter() - began)
            facts = machine_facts(plain, ("shared_buffers", "work_mem", "jit"))
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        result = {
            "machine": {**facts, "uptime_before_and_after": load},
            "fleet": {"devices": args.devices, "series": args.devices * len(METRICS)},
            "dashboard": {
                "charts": args.charts,
                "series_per_chart": args.series_per_chart,
                "range_days": 365,
                "interval_auto_chose": interval,
                "points_per_load": points,
            },
            "dashboard_page_ms": _stats(page),
            "eight_series_requests_ms": _stats(series_only),
            "whole_dashboard_ms": _stats(whole),
            "hand_written_sql_same_8_ms": _stats(hand),
            "ratio_series_requests_over_sql_median": round(statistics.median(series_only) / statistics.median(hand), 2),
            "chart_builder_page_ms": _stats(builder),
            "method": "django.test.Client in-process, DEBUG off, session auth as a site operator (guardian); "
            f"1 warm-up round then {RUNS}; series requests uncached (cache generation bumped each round), MessagePack",
        }
        result_print(result, args.json_out)
    finally:
        caches["default"].delete("telemetry:series-query:generation")
        scratch.drop()


if __name__ == "__main__":
    main()
