"""Stored hourly electricity of sites: ``SiteEnergyHour`` rows, kept up to date from hourly rollups, that the site
energy report reads instead of computing long ranges from one rollup row per source and hour (a year of 1,000
devices is 8.76 M rows: seconds per window, whatever the statement; docs/energy-pages-performance.md).

What a row holds: the site's kWh in one UTC hour exactly as the report computes it, because it is the same
statement (``energy.kwh_hourly_rollup_statements``: derived's rollup statements with the sources' kWh factors),
run as ``INSERT ... SELECT``. An hour's figure from hourly rollups does not depend on where a range of whole hours
starts or ends (a register's step into the range comes from the hour before it; a power segment crossing a
boundary is cut there), so rows computed in pieces are the figures of the whole range.

When rows are final (``SiteEnergyState.complete_until``, ``final_until``): for a site whose sources include a power
gauge, hours before ``floor(hourly watermark - gap)``, where gap is ``ENERGY_MAX_GAP_SECONDS``. The last hours before
the watermark are not: a power segment from their last reading to the first reading after the watermark (raw, not
rolled up yet) puts energy into them, and that reading may not have arrived when the refresh runs. With energy
registers only, hours before the watermark itself: a register's hour is its own rollup and the step from the hour
before. After the watermark an hour only changes through the rollup engine's dirty recompute, which marks the sites
concerned (``site_energy_mark_dirty``).

Refresh (``site_energy_refresh``, every minute from beat and after each rollup run): if the site's sources
(``energy.electrical_sources`` of its active devices, the report's own) no longer match the stored digest, the
site is rebuilt from its first hourly rollup in one transaction, unless sources were only added (each stored
source's part, ``SiteEnergyState.sources_parts``, still there and the same): then only the new sources' kWh is
computed and added to the stored hours (an hour's figure is the sum over the sources; a device onboarded on a site
of 1,000 no longer recomputes a year of all of them). Then rows are recomputed from ``dirty_from`` (if marked) or
extended from ``complete_until``, up to the new final hour.

The heat-pump page's days (``SiteHeatPumpDay``) are kept by the same refresh, in the same transaction under the
same state row: each heat pump's heat output and electrical input kWh per local day of the site (derived's rollup
statements in 1d buckets of the site's zone, per series: ``energy.kwh_daily_rollup_statements``) and its outdoor
temperature's degree days per local day (``energy.heating_degree_days_by_day_statement``), as ``INSERT ...
SELECT``. A day is final when the whole local day ends before the final hour of the pumps' energy sources
(``days_until``, a local midnight); ``dirty_from`` recomputes days from the local day containing it. A changed
digest (``energy.heat_pump_digest``) recomputes the rows of the series that changed (a pump added, removed or
reconfigured: each series' rows are its own), or all days for another zone. A day's figure does not depend on where
a range of whole local days is cut, for the same reasons as an hour's.

Retention: hourly rollups are kept forever (``ROLLUP_RETENTION_DAYS["1h"]`` is None, retention.py), so stored rows
are kept forever too and a rebuild recomputes the same history. Rollups of a purged device go with it; the digest
then differs and the site is rebuilt without it.
"""

import datetime
import json
import time

from django.db import connection, transaction
from django.utils import timezone

from apps.core.time import epoch_ms_sql, from_epoch_ms
from apps.devices.models import Device, Site
from apps.telemetry import energy
from apps.telemetry.derived import HOURLY, energy_gap, figure_statement_settings
from apps.telemetry.models import RollupWatermark, SiteEnergyHour, SiteEnergyState, SiteHeatPumpDay

# pg_try_advisory_xact_lock key of the refresh (an arbitrary constant, unique within the project): a second refresh
# running at the same time skips rather than computing the same rows twice.
ADVISORY_LOCK_KEY = 0x46575F5349544545  # "FW_SITEE"
# A run refreshes sites until this is spent (a first build of a large site can take several seconds on its own),
# well inside the beat interval; the sites not reached are taken first next run (oldest refresh first).
TIME_BUDGET_SECONDS = 20.0

_HOURS = SiteEnergyHour._meta.db_table
_STATE = SiteEnergyState._meta.db_table
_DAYS = SiteHeatPumpDay._meta.db_table
_HOUR = datetime.timedelta(hours=1)


# ---------------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------------

# One row of two arrays, not a row per hour: a year is 8,760 hours, and building a timestamptz per row from its text
# took 23 ms of a 135 ms page; integers in an array load in C.
_READ = f"""
    SELECT array_agg({epoch_ms_sql("hour")} ORDER BY hour), array_agg(kwh ORDER BY hour)
    FROM {_HOURS} WHERE site_id = %s AND hour >= %s AND hour < %s
"""


def site_energy_stored(*, site_id: int, sources: list[tuple[int, object]]) -> energy.StoredHours | None:
    """The site's stored hours, if they were computed for exactly ``sources`` (the report's), else None (the report
    then computes everything). Usable up to ``complete_until``, or up to ``dirty_from`` where late data is waiting
    for the next refresh."""
    state = SiteEnergyState.objects.filter(site_id=site_id).values_list(
        "sources_digest", "complete_until", "dirty_from"
    )
    state = state.first()
    if state is None or not sources:
        return None
    digest, complete_until, dirty_from = state
    if complete_until is None or digest != energy.sources_digest(sources):
        return None
    until = min(complete_until, dirty_from) if dirty_from is not None else complete_until
    return energy.StoredHours(until=until, read=lambda start, end: _hours_read(site_id, start, end))


def _hours_read(
    site_id: int, start: datetime.datetime, end: datetime.datetime
) -> list[tuple[datetime.datetime, float]]:
    with connection.cursor() as cursor:
        cursor.execute(_READ, [site_id, start, end])
        hours, kwh = cursor.fetchone()
    return [(from_epoch_ms(hour), value) for hour, value in zip(hours or (), kwh or (), strict=True)]


# One row per series: the sum of its stored days in [start, end) as the difference of two running sums (the last
# rows before end and before start: two index probes), and, as arrays, its days from ``recent`` on (the page shows
# the COP of the last days only). Fetching every day of a year of 100 heat pumps (109,500 values) as arrays took
# 60 ms of a 178 ms page, summing them in the statement 35 ms (bench/energy_pages.py data).
_DAYS_READ = f"""
    SELECT s.id, coalesce(e.through, 0) - coalesce(b.through, 0), r.days, r.values
    FROM unnest(%(ids)s::int4[]) AS s (id)
    LEFT JOIN LATERAL (
        SELECT through FROM {_DAYS} WHERE site_id = %(site)s AND series_id = s.id AND day < %(end)s
        ORDER BY day DESC LIMIT 1
    ) AS e ON true
    LEFT JOIN LATERAL (
        SELECT through FROM {_DAYS} WHERE site_id = %(site)s AND series_id = s.id AND day < %(start)s
        ORDER BY day DESC LIMIT 1
    ) AS b ON true
    LEFT JOIN LATERAL (
        SELECT array_agg({epoch_ms_sql("day")} ORDER BY day) AS days, array_agg(value ORDER BY day) AS values
        FROM {_DAYS}
        WHERE site_id = %(site)s AND series_id = s.id AND day >= greatest(%(recent)s, %(start)s) AND day < %(end)s
    ) AS r ON true
"""


def heat_pump_days_stored(*, site_id: int, pumps, tz: str) -> energy.StoredDays | None:
    """The site's stored heat-pump days, if they were computed for exactly ``pumps`` (the page's, from
    ``energy.heat_pump_sources``) in the zone ``tz``, else None (the page then computes everything). Usable up to
    ``days_until``, or up to the local day containing ``dirty_from`` where late data is waiting for the refresh."""
    state = SiteEnergyState.objects.filter(site_id=site_id).values_list("days_digest", "days_until", "dirty_from")
    state = state.first()
    if state is None or not pumps:
        return None
    digest, days_until, dirty_from = state
    if days_until is None or digest != energy.heat_pump_digest(pumps, tz):
        return None
    until = min(days_until, energy.local_day_floor(dirty_from, tz)) if dirty_from is not None else days_until
    ids = [series_id for series_id, _ in _days_series(pumps)]
    return energy.StoredDays(until=until, read=lambda start, end, recent: _days_read(site_id, ids, start, end, recent))


def _days_read(site_id: int, ids: list[int], start, end, recent: datetime.datetime) -> dict:
    instants: dict[int, datetime.datetime] = {}

    def instant(epoch_ms: int) -> datetime.datetime:
        found = instants.get(epoch_ms)
        if found is None:
            found = instants[epoch_ms] = from_epoch_ms(epoch_ms)
        return found

    by_series = {}
    with connection.cursor() as cursor:
        cursor.execute(_DAYS_READ, {"site": site_id, "ids": ids, "start": start, "end": end, "recent": recent})
        for series_id, total, days, values in cursor.fetchall():
            points = zip(days or (), values or (), strict=True)
            by_series[series_id] = (total, [(instant(day), value) for day, value in points])
    return by_series


# ---------------------------------------------------------------------------------------------------------------------
# Late data: the rollup engine marks the sites whose hours it recomputed
# ---------------------------------------------------------------------------------------------------------------------

# Over the engine's dirty set (its temporary table ``rollup_dirty`` of 1-minute buckets): each recomputed hour h
# changes the site's hours from floor(h - gap) on (the power segment into h starts at most gap before it; a
# register's step and the segment out of h change the hours after it, which the refresh recomputes anyway). Only
# hours the engine recomputes (closed ones); only states whose rows (hours or days) reach that far.
_MARK_DIRTY = f"""
    UPDATE {_STATE} AS st
    SET dirty_from = least(st.dirty_from, d.hour)
    FROM (
        SELECT dv.site_id, min(date_bin('1 hour', h.hour - %(gap)s, %(origin)s)) AS hour
        FROM (SELECT DISTINCT series_id, date_bin('1 hour', bucket, %(origin)s) AS hour FROM rollup_dirty) h
        JOIN telemetry_series s ON s.id = h.series_id
        JOIN {Device._meta.db_table} dv ON dv.id = s.device_id
        WHERE h.hour + interval '1 hour' <= %(watermark)s
        GROUP BY dv.site_id
    ) d
    WHERE st.site_id = d.site_id AND (st.complete_until > d.hour OR st.days_until > d.hour)
"""


def site_energy_mark_dirty(cursor, *, watermark: datetime.datetime, origin: str) -> int:
    """In the rollup engine's transaction, after it recomputed the hourly buckets of its dirty set
    (``rollup_dirty``) closed before the hourly ``watermark`` (``origin``: the engine's bucket origin): move each
    affected site's ``dirty_from`` back to the first stored hour that changed. One statement for the whole set;
    returns the states marked.

    A refresh in progress holds its site's state row locked, so this waits for it and marks its new rows: the
    refresh never saw these recomputed rollups (they are committed with this mark)."""
    cursor.execute(_MARK_DIRTY, {"gap": energy_gap(), "origin": origin, "watermark": watermark})
    return cursor.rowcount


# ---------------------------------------------------------------------------------------------------------------------
# Refresh
# ---------------------------------------------------------------------------------------------------------------------

_STATE_ENSURE = f"""
    INSERT INTO {_STATE} (site_id, sources_digest, complete_until, dirty_from, refreshed_at, days_digest, days_until)
    VALUES (%s, '', NULL, NULL, NULL, '', NULL) ON CONFLICT (site_id) DO NOTHING
"""
_STATE_LOCK = f"""
    SELECT sources_digest, complete_until, dirty_from, days_digest, days_until, sources_parts, days_parts
    FROM {_STATE} WHERE site_id = %s
    FOR UPDATE
"""
_STATE_SAVE = f"""
    UPDATE {_STATE} SET sources_digest = %s, complete_until = %s, days_digest = %s, days_until = %s,
    sources_parts = %s::jsonb, days_parts = %s::jsonb, dirty_from = NULL, refreshed_at = now()
    WHERE site_id = %s
"""
_DAYS_SERIES_DELETE = f"DELETE FROM {_DAYS} WHERE site_id = %s AND series_id = ANY(%s::int4[])"
_ROWS_DELETE = f"DELETE FROM {_HOURS} WHERE site_id = %s AND hour >= %s"
# Each kind's statement gives (NULL, hour, kWh); the second kind adds to the first's rows, as ``energy.kwh`` adds
# them per bucket.
_ROWS_INSERT = f"""
    INSERT INTO {_HOURS} (site_id, hour, kwh)
    SELECT %(site_id)s, computed.bucket, computed.kwh FROM ({{statement}}) AS computed (key, bucket, kwh)
    ON CONFLICT (site_id, hour) DO UPDATE SET kwh = {_HOURS}.kwh + EXCLUDED.kwh
"""
_DAYS_DELETE = f"DELETE FROM {_DAYS} WHERE site_id = %s AND day >= %s"
# Each statement gives (series id, local day, value in the series' unit); times the series' factor (kWh factor, 1 for
# degree days) as ``energy.kwh`` multiplies what it fetches. A series is in one statement only: no conflicts.
# Each row's running sum (``through``) continues from the series' last row before the recomputed days (rows from
# ``days_from`` on were deleted first): one index probe per series for that base, the window over the new rows.
_DAYS_INSERT = f"""
    INSERT INTO {_DAYS} (site_id, series_id, day, value, through)
    SELECT %(site_id)s, computed.key, computed.bucket, computed.value * f.factor,
           coalesce(base.through, 0)
           + sum(computed.value * f.factor) OVER (PARTITION BY computed.key ORDER BY computed.bucket)
    FROM ({{statement}}) AS computed (key, bucket, value)
    JOIN unnest(%(store_ids)s::int4[], %(store_factors)s::float8[]) AS f (id, factor) ON f.id = computed.key
    LEFT JOIN LATERAL (
        SELECT through FROM {_DAYS}
        WHERE site_id = %(site_id)s AND series_id = f.id AND day < %(days_from)s ORDER BY day DESC LIMIT 1
    ) AS base ON true
"""
# The first hour any source has a rollup for: one index probe per series.
_FIRST_HOUR = """
    SELECT min(f.bucket) FROM unnest(%s::int4[]) AS s (id)
    CROSS JOIN LATERAL (SELECT bucket FROM telemetry_rollup_1h WHERE series_id = s.id ORDER BY bucket LIMIT 1) f
"""
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def final_until(watermark: datetime.datetime | None, sources: list[tuple[int, object]]) -> datetime.datetime | None:
    """The hour before which stored rows of ``sources`` are final, for the hourly rollup ``watermark`` (see the
    module docstring): the watermark itself for energy registers only (an hour's figure is its own rollup's and the
    step from the hour before), one gap earlier if a power gauge is among them."""
    if watermark is None:
        return None
    if not any(not definition.is_energy_register for _, definition in sources):
        return watermark
    earliest = watermark - energy_gap()
    return earliest - (earliest - _EPOCH) % _HOUR


def _hourly_watermark() -> datetime.datetime | None:
    return RollupWatermark.objects.filter(resolution=HOURLY).values_list("rolled_until", flat=True).first()


def _site_devices(site_id: int) -> list:
    return list(Device.objects.filter(site_id=site_id, is_active=True).values_list("id", "device_type_id", named=True))


def site_energy_sources(site_id: int, devices=None) -> list[tuple[int, object]]:
    """The site's electricity sources as its energy page has them: those of its active devices (``devices``: those
    rows, if already read)."""
    sources, _ = energy.electrical_sources(_site_devices(site_id) if devices is None else devices)
    return sources


def heat_pump_sources(site_id: int, devices=None) -> list:
    """The site's heat pumps as its heat-pump page has them (``energy.heat_pump_sources`` of its active devices)."""
    return energy.heat_pump_sources(_site_devices(site_id) if devices is None else devices)


def site_energy_refresh(*, site_id: int, watermark: datetime.datetime | None = None) -> dict:
    """Bring one site's stored hours up to the final hour of the hourly ``watermark`` (read if not given): rebuild
    if its sources changed, compute only the new ones' hours if sources were only added, and recompute from
    ``dirty_from`` and extend from ``complete_until``; the heat-pump days likewise (``_days_refresh``). Returns what
    was done: ``{"mode": "rebuild" | "add" | "extend" | "none", "start", "until", "rows", "days_mode", ...}``."""
    watermark = watermark or _hourly_watermark()
    devices = _site_devices(site_id)
    sources = site_energy_sources(site_id, devices)
    digest, parts = energy.sources_digest(sources), energy.sources_parts(sources)
    tz = Site.objects.filter(id=site_id).values_list("timezone", flat=True).first() or "UTC"
    pumps = heat_pump_sources(site_id, devices)
    days_digest, days_parts = energy.heat_pump_digest(pumps, tz), {"tz": tz, "series": energy.heat_pump_parts(pumps)}
    until = final_until(watermark, sources)
    days_final = final_until(watermark, [source for source in _days_series(pumps) if source[1] is not None])
    with transaction.atomic(), connection.cursor() as cursor:
        # Committed on its own so that the state row exists to be locked below, and to be marked by the rollup
        # engine while this site is being built (a mark on a missing row would be lost).
        cursor.execute(_STATE_ENSURE, [site_id])
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_STATE_LOCK, [site_id])
        stored_digest, complete_until, dirty_from, stored_days_digest, days_until, stored_parts, stored_days_parts = (
            cursor.fetchone()
        )
        # Django's cursor hands jsonb over as its text.
        stored_parts, stored_days_parts = (
            json.loads(value) if value else None for value in (stored_parts, stored_days_parts)
        )
        if until is None:
            return {"mode": "none", "start": None, "until": None, "rows": 0, "days_mode": "none", "days_rows": 0}
        rows = 0
        added = _added(stored_parts, parts) if stored_digest != digest else set()
        if complete_until is None or (stored_digest != digest and not added):
            mode, start = "rebuild", _first_hour(cursor, sources) or until
            cursor.execute(_ROWS_DELETE, [site_id, _EPOCH])
        else:
            # Not past the final hour: a power gauge among the new sources makes the hour before the watermark
            # not final any more.
            mode, start = ("add" if added else "extend"), min(complete_until, dirty_from or complete_until, until)
            cursor.execute(_ROWS_DELETE, [site_id, start])
            if added:
                # Their kWh added to the stored hours before the recomputed ones: an hour's figure is the sum over
                # the sources, and the new sources' hours are computed as a rebuild would.
                sources_added = [source for source in sources if str(source[0]) in added]
                first = _first_hour(cursor, sources_added)
                if first is not None and first < start:
                    rows += _rows_compute(cursor, site_id=site_id, sources=sources_added, start=first, end=start)
        rows += _rows_compute(cursor, site_id=site_id, sources=sources, start=start, end=until)
        if days_until is None:
            days_changed = None  # none stored yet: built
        elif stored_days_digest == days_digest:
            days_changed = set()
        else:
            days_changed = _days_changed(stored_days_parts, days_parts)
        days = _days_refresh(
            cursor,
            site_id=site_id,
            pumps=pumps,
            tz=tz,
            changed=days_changed,
            start=min(days_until, dirty_from or days_until) if days_until is not None else None,
            until=days_final,
        )
        cursor.execute(
            _STATE_SAVE,
            [
                digest,
                max(start, until),
                days_digest,
                days["until"],
                json.dumps(parts),
                json.dumps(days_parts),
                site_id,
            ],
        )
    return {
        "mode": mode,
        "start": start,
        "until": max(start, until),
        "rows": rows,
        "days_mode": days["mode"],
        "days_start": days["start"],
        "days_until": days["until"],
        "days_rows": days["rows"],
    }


def _added(stored: dict | None, parts: dict[str, str]) -> set[str]:
    """The series of ``parts`` not among ``stored``, if the sources were only added to (every stored one still
    there, the same); else (or nothing known of the stored ones) empty: the site's hours are rebuilt."""
    if stored is None or any(parts.get(series_id) != part for series_id, part in stored.items()):
        return set()
    return set(parts) - set(stored)


def _days_changed(stored: dict | None, parts: dict) -> set[str] | None:
    """The series whose stored days no longer hold (gone, new or computed differently), or None where all of them
    must be rebuilt (another zone, or nothing known of the stored ones)."""
    if stored is None or stored.get("tz") != parts["tz"]:
        return None
    before, after = stored.get("series", {}), parts["series"]
    return {series_id for series_id in before.keys() | after.keys() if before.get(series_id) != after.get(series_id)}


def _days_refresh(
    cursor, *, site_id: int, pumps, tz: str, changed: set[str] | None, start, until: datetime.datetime
) -> dict:
    """The heat-pump days of the site brought up to the last local midnight before ``until`` (the final hour):
    rebuilt from the local day of the pumps' first hourly rollup (``changed`` None: none stored, another zone, or
    nothing known of the stored series), or recomputed
    from the local day containing ``start`` (``dirty_from`` or ``days_until``), the ``changed`` series' days
    deleted and computed again before it (a new, moved or changed heat pump: its own rows only)."""
    end = energy.local_day_floor(until, tz)
    series = _days_series(pumps)
    computed = 0
    if changed is None:
        mode = "rebuild"
        start = energy.local_day_floor(_first_hour(cursor, series) or end, tz)
        cursor.execute(_DAYS_DELETE, [site_id, _EPOCH])
    else:
        mode, start = ("sources" if changed else "extend"), min(energy.local_day_floor(start, tz), end)
        cursor.execute(_DAYS_DELETE, [site_id, start])
        if changed:
            cursor.execute(_DAYS_SERIES_DELETE, [site_id, [int(series_id) for series_id in changed]])
            renewed = [source for source in series if str(source[0]) in changed]
            first = _first_hour(cursor, renewed)
            first_day = energy.local_day_floor(first, tz) if first is not None else start
            if first_day < start:
                computed += _days_compute(cursor, site_id=site_id, series=renewed, tz=tz, start=first_day, end=start)
    if start < end:
        computed += _days_compute(cursor, site_id=site_id, series=series, tz=tz, start=start, end=end)
    return {"mode": mode, "start": start, "until": max(start, end), "rows": computed}


def _days_series(pumps) -> list[tuple[int, object]]:
    """Every series the heat-pump days are computed from, as ``(series id, definition or None)``."""
    series = []
    for _, heat, electrical, outdoor_id in pumps:
        series += [source for source in (heat, electrical) if source is not None]
        series += [(outdoor_id, None)] if outdoor_id is not None else []
    return series


def _days_compute(cursor, *, site_id: int, series, tz: str, start: datetime.datetime, end: datetime.datetime) -> int:
    """Insert the days ``[start, end)`` (local midnights; none there yet) of ``series`` (``_days_series``): one
    ``INSERT ... SELECT`` per kind of energy source (heat and electrical series together: each series' rows are its
    own) and one for the degree days. Returns the rows written."""
    energy_sources = [(series_id, d) for series_id, d in series if d is not None]
    outdoor_ids = [series_id for series_id, d in series if d is None]
    factors = [(series_id, energy.kwh_factor(d)) for series_id, d in energy_sources]
    statements = [
        (statement, params, factors)
        for statement, params in energy.kwh_daily_rollup_statements(energy_sources, start=start, end=end, tz=tz)
    ]
    if outdoor_ids:
        statement, params = energy.heating_degree_days_by_day_statement(
            series_ids=outdoor_ids, start=start, end=end, tz=tz
        )
        statements.append((statement, params, [(series_id, 1.0) for series_id in outdoor_ids]))
    if statements:
        figure_statement_settings(cursor)
    rows = 0
    for statement, params, store in statements:
        cursor.execute(
            _DAYS_INSERT.format(statement=statement),
            {
                **params,
                "site_id": site_id,
                "days_from": start,
                "store_ids": [series_id for series_id, _ in store],
                "store_factors": [factor for _, factor in store],
            },
        )
        rows += cursor.rowcount
    return rows


def _first_hour(cursor, sources) -> datetime.datetime | None:
    if not sources:
        return None
    cursor.execute(_FIRST_HOUR, [[series_id for series_id, _ in sources]])
    return cursor.fetchone()[0]


def _rows_compute(cursor, *, site_id: int, sources, start: datetime.datetime, end: datetime.datetime) -> int:
    """Insert the site's rows for the whole hours ``[start, end)`` (none there yet): one ``INSERT ... SELECT`` per
    kind of source. Returns the rows written (an hour of both kinds counts twice)."""
    rows = 0
    statements = energy.kwh_hourly_rollup_statements(sources, start=start, end=end)
    if statements:
        figure_statement_settings(cursor)
    for statement, params in statements:
        cursor.execute(_ROWS_INSERT.format(statement=statement), {**params, "site_id": site_id})
        rows += cursor.rowcount
    return rows


# Sites with at least one series of an active device, those never refreshed first, then the longest ago.
_SITES_DUE = f"""
    SELECT site.id FROM {Site._meta.db_table} site
    LEFT JOIN {_STATE} st ON st.site_id = site.id
    WHERE EXISTS (
        SELECT FROM {Device._meta.db_table} dv JOIN telemetry_series s ON s.device_id = dv.id
        WHERE dv.site_id = site.id AND dv.is_active
    ) OR st.site_id IS NOT NULL
    ORDER BY st.refreshed_at NULLS FIRST, site.id
"""


def site_energy_refresh_all(*, time_budget: float = TIME_BUDGET_SECONDS) -> dict:
    """Refresh every site with a series (or stored rows) until ``time_budget`` is spent; ``{"skipped": ...}`` if
    another run holds the lock. The lock is a session-level advisory lock held for the run, since each site is
    its own transaction."""
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
        if not cursor.fetchone()[0]:
            return {"skipped": "another run holds the lock"}
    try:
        watermark = _hourly_watermark()
        with connection.cursor() as cursor:
            cursor.execute(_SITES_DUE)
            due = [site_id for (site_id,) in cursor.fetchall()]
        figures = {"sites": 0, "rebuilt": 0, "rows": 0, "days_rows": 0, "caught_up": True}
        for site_id in due:
            if time.monotonic() - started >= time_budget:
                figures["caught_up"] = False
                break
            done = site_energy_refresh(site_id=site_id, watermark=watermark)
            figures["sites"] += 1
            figures["rebuilt"] += done["mode"] == "rebuild"
            figures["rows"] += done["rows"]
            figures["days_rows"] += done["days_rows"]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK_KEY])
    figures["seconds"] = round(time.monotonic() - started, 3)
    figures["at"] = timezone.now().isoformat()
    return figures
