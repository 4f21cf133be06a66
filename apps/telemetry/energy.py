"""Energy reports of devices: kWh per hour, day, week or month, CO₂e, tariff cost, the comparison with the period
before, and heat-pump efficiency (COP over time, seasonal performance factor, degree days). No permissions here: the
selectors pass devices they have scoped.

Every figure comes from ``derived`` (one statement per source for all the devices: power integrated by the
trapezoidal rule, energy registers differenced with resets counted from 0). Totals are computed per hour in SQL and
folded into local days, weeks and months here, because the tariff prices each local hour; that is a fold over at most
one row per hour of the range, never over readings.
"""

import datetime
import hashlib
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import connection

from apps.devices.choices import MetricRole
from apps.devices.energy import ENERGY_UNITS, POWER_UNITS, Tariff
from apps.devices.models import MetricDefinition
from apps.devices.selectors import metric_definitions_by_type
from apps.telemetry.derived import (
    HOURLY,
    DerivedBuckets,
    DerivedPlan,
    bucket_parameters,
    combined_rollup_statements,
    derived_plan,
    energy_figures,
    local_bucket_sql,
    longest_range,
    volume_figures,
)
from apps.telemetry.models import Series
from apps.telemetry.queries import AGGREGATE_SQL

# Page presets: (label, bucket period, how many periods, which calendar shift makes "the period before").
PERIODS = {
    "24h": ("Last 24 hours by hour", "hour", 24),
    "7d": ("Last 7 days by day", "day", 7),
    "8w": ("Last 8 weeks by week", "week", 8),
    "12mo": ("Last 12 months by month", "month", 12),
}
# Totals are computed per hour and folded into local periods here, because the tariff prices each local hour.
REPORT_INTERVAL = "1h"
# A custom range of local days: at most the hours one computation of REPORT_INTERVAL buckets answers (the energy
# API's own limit), so the page's figures are ones the API gives for the same range. It covers the longest preset.
LONGEST_DAY_RANGE = longest_range(REPORT_INTERVAL).days
# Reports read hourly rollups up to the hourly watermark and raw readings after it, whatever the range: a site of
# 1,000 devices took 13 s over 7 days from raw readings (bench/energy_pages.py); the API reads raw by default.
REPORT_RESOLUTION = "1h"
# Heating degree days: the base temperature below which a building needs heat (EN ISO 15927-6 uses 15.5 °C).
DEGREE_DAY_BASE_C = 15.5
# The heat-pump page shows each pump's COP of the range's last days: a year is 365 per pump, and the stored path
# sums the days where they are stored rather than fetching them (109,500 values for 100 pumps took 60 ms to read).
RECENT_COP_DAYS = 7


# ---------------------------------------------------------------------------------------------------------------------
# Which metric gives a device's energy
# ---------------------------------------------------------------------------------------------------------------------


def electrical_source(definitions) -> object | None:
    """The metric a device's electricity use is read from, or None.

    The metric marked as electrical input, if any. Otherwise a fallback among the metrics *without a role* only: the
    first energy register (Wh/kWh/MWh totalizer) by key, else the first power gauge by key. A metric marked as heat
    output (or with any other role) is never the fallback: a heat pump's heat meter is a kWh register too, and taking
    it would count heat delivered as electricity. A device whose only energy metric is its heat output has no
    electricity (``heat_output_only``)."""
    definitions = list(definitions)
    marked = role_source(definitions, MetricRole.ELECTRICAL_INPUT)
    if marked is not None:
        return marked
    unmarked = sorted((d for d in definitions if not d.role), key=lambda definition: definition.key)
    registers = [definition for definition in unmarked if definition.is_energy_register]
    powers = [definition for definition in unmarked if definition.is_power]
    return (registers or powers or [None])[0]


def heat_output_only(definitions) -> bool:
    """A device type that measures heat output but has no metric electricity can be read from (its heat meter is
    not counted as electricity): the energy pages say how many such devices they leave out."""
    definitions = list(definitions)
    return role_source(definitions, MetricRole.HEAT_OUTPUT) is not None and electrical_source(definitions) is None


def role_source(definitions, role: str):
    return next((definition for definition in definitions if definition.role == role), None)


def kwh_factor(definition) -> float:
    return ENERGY_UNITS[definition.unit] if definition.is_energy_register else POWER_UNITS[definition.unit]


def _by_kind(sources: list[tuple[int, object]]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """``(series id, kWh factor)`` of the power gauges and of the energy registers among ``sources``."""
    power = [(series_id, kwh_factor(d)) for series_id, d in sources if not d.is_energy_register]
    registers = [(series_id, kwh_factor(d)) for series_id, d in sources if d.is_energy_register]
    return power, registers


def kwh(
    sources: list[tuple[int, object]], *, plan: DerivedPlan, interval: str, tz: str, combine: bool
) -> dict[int | None, DerivedBuckets]:
    """kWh per bucket of ``(series id, metric definition)`` pairs: power integrated, registers differenced, one
    statement for each kind. ``combine``: their sum under the key None; else per series id."""
    power, registers = _by_kind(sources)
    results: dict[int | None, DerivedBuckets] = {}
    for compute, pairs in ((energy_figures, power), (volume_figures, registers)):
        if not pairs:
            continue
        ids, factors = [series_id for series_id, _ in pairs], [factor for _, factor in pairs]
        computed = compute(series_ids=ids, plan=plan, interval=interval, tz=tz, factors=factors if combine else None)
        by_id = dict(pairs)
        for key, buckets in computed.items():
            factor = 1.0 if combine else by_id[key]
            scaled = [(bucket, value * factor) for bucket, value in buckets.points]
            if key in results:
                merged = dict(results[key].points)
                for bucket, value in scaled:
                    merged[bucket] = merged.get(bucket, 0.0) + value
                scaled = sorted(merged.items())
            results[key] = DerivedBuckets(
                points=scaled,
                total=sum(value for _, value in scaled),
                resolution=buckets.resolution,
                raw_from=buckets.raw_from,
                start=buckets.start,
                end=buckets.end,
            )
    return results


def kwh_hourly_rollup_statements(
    sources: list[tuple[int, object]], *, start: datetime.datetime, end: datetime.datetime
) -> list[tuple[str, dict]]:
    """The statements ``kwh(sources, combine=True)`` runs over hourly rollups for the whole hours ``[start, end)``
    in 1h buckets, for storing their rows (``(NULL, hour, kWh)``, one statement per kind: add them per hour)."""
    power, registers = _by_kind(sources)
    return combined_rollup_statements(
        power=power, registers=registers, start=start, end=end, interval=REPORT_INTERVAL, tz="UTC"
    )


def kwh_daily_rollup_statements(
    sources: list[tuple[int, object]], *, start: datetime.datetime, end: datetime.datetime, tz: str
) -> list[tuple[str, dict]]:
    """The statements ``kwh(sources, interval="1d", tz=tz, combine=False)`` runs over hourly rollups for ``[start,
    end)``, for storing their rows: ``(series id, local day, value)``, one statement per kind; the value times the
    series' ``kwh_factor`` is the kWh ``kwh`` gives (it multiplies the fetched value the same way)."""
    power, registers = _by_kind(sources)
    return combined_rollup_statements(
        power=power, registers=registers, start=start, end=end, interval="1d", tz=tz, combine=False
    )


def _kind(definition) -> str:
    return "register" if definition.is_energy_register else "power"


def _digest(parts: list[str]) -> str:
    return hashlib.sha256(",".join(sorted(parts)).encode()).hexdigest()


def sources_parts(sources: list[tuple[int, object]]) -> dict[str, str]:
    """What each source's hourly kWh is computed from: ``{series id: "kind:kWh factor"}`` (kind register or
    power), for telling which sources a site gained since its hours were stored (``site_energy``)."""
    return {str(series_id): f"{_kind(d)}:{kwh_factor(d)!r}" for series_id, d in sources}


def sources_digest(sources: list[tuple[int, object]]) -> str:
    """What the site's hourly kWh is computed from, as a short string that changes when any of it does: each
    source's series id, kind (register or power) and kWh factor."""
    return _digest([f"{series_id}:{part}" for series_id, part in sources_parts(sources).items()])


def heat_pump_parts(pumps) -> dict[str, str]:
    """What each series of the heat-pump days (``heat_pump_sources``) is computed from: ``{series id:
    "role:kind:kWh factor"}`` for heat and electrical sources, ``"outdoor"`` for outdoor temperatures."""
    parts = {}
    for _, heat, electrical, outdoor_id in pumps:
        for role, source in (("heat", heat), ("electrical", electrical)):
            if source is not None:
                series_id, d = source
                parts[str(series_id)] = f"{role}:{_kind(d)}:{kwh_factor(d)!r}"
        if outdoor_id is not None:
            parts[str(outdoor_id)] = "outdoor"
    return parts


def heat_pump_digest(pumps, tz: str) -> str:
    """What a site's stored heat-pump days are computed from, as a short string that changes when any of it does:
    each series' part (``heat_pump_parts``) and the zone whose local days they are."""
    return _digest([f"tz:{tz}", *(f"{series_id}:{part}" for series_id, part in heat_pump_parts(pumps).items())])


# ---------------------------------------------------------------------------------------------------------------------
# Which series of a set of devices give their electricity
# ---------------------------------------------------------------------------------------------------------------------


def series_ids_by_metric(devices, keys=None) -> dict[tuple[int, str], int]:
    """The series id of each ``(device id, metric key)`` that has reported, for ``devices`` (anything with ``id``),
    only of the metric ``keys`` if given."""
    # One array parameter, not the ORM's IN list: a site's 1,000 devices as 1,000 placeholders took 9.6 ms to build
    # and plan, as ANY(array) 1.8 ms.
    sql = f"SELECT id, device_id, metric_key FROM {Series._meta.db_table} WHERE device_id = ANY(%s::int8[])"
    params = [[device.id for device in devices]]
    if keys is not None:
        sql += " AND metric_key = ANY(%s::text[])"
        params.append(sorted(set(keys)))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {(device_id, key): series_id for series_id, device_id, key in cursor.fetchall()}


def electrical_sources(devices) -> tuple[list[tuple[int, MetricDefinition]], int]:
    """Each device's electricity series (``electrical_source``) that has reported, and how many devices measure
    heat output only (left out: their heat meter is not electricity), in two statements. ``devices``: anything with
    ``id`` and ``device_type_id`` (a site's 1,000 devices as model instances took 90 ms to load; as rows, a few)."""
    by_type = metric_definitions_by_type(device.device_type_id for device in devices)
    source_by_type = {type_id: electrical_source(definitions) for type_id, definitions in by_type.items()}
    keys = {definition.key for definition in source_by_type.values() if definition is not None}
    series = series_ids_by_metric(devices, keys)
    sources, heat_only = [], 0
    for device in devices:
        definition = source_by_type.get(device.device_type_id)
        heat_only += heat_output_only(by_type.get(device.device_type_id, []))
        series_id = series.get((device.id, definition.key)) if definition else None
        if series_id is not None:
            sources.append((series_id, definition))
    return sources, heat_only


def heat_pump_sources(devices) -> list[tuple[object, tuple[int, object] | None, tuple[int, object] | None, int | None]]:
    """The heat pumps among ``devices`` (those whose type marks a heat output metric, anything with ``id`` and
    ``device_type_id``) as ``heat_pump_figures`` takes them: ``(device, heat source, electrical source, outdoor
    temperature series id)``, a source ``(series id, definition)`` or None where that metric has not reported. The
    heat-pump page and the stored days (``site_energy``) both take their sources from here."""
    devices = list(devices)
    by_type = metric_definitions_by_type(device.device_type_id for device in devices)
    series = series_ids_by_metric(devices)
    pumps = []
    for device in devices:
        definitions = by_type.get(device.device_type_id, [])
        heat = role_source(definitions, MetricRole.HEAT_OUTPUT)
        if heat is None:
            continue
        electrical = electrical_source(definitions)  # never the heat output metric
        outdoor = role_source(definitions, MetricRole.OUTDOOR_TEMPERATURE)

        def source(definition, device=device):
            series_id = series.get((device.id, definition.key)) if definition else None
            return (series_id, definition) if series_id is not None else None

        outdoor_id = series.get((device.id, outdoor.key)) if outdoor else None
        pumps.append((device, source(heat), source(electrical), outdoor_id))
    return pumps


# ---------------------------------------------------------------------------------------------------------------------
# Periods, folding and prices
# ---------------------------------------------------------------------------------------------------------------------


def period_start(local: datetime.datetime, period: str) -> datetime.datetime:
    """The local start of the hour, day, week (Monday) or month containing the local time ``local``."""
    if period == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - datetime.timedelta(days=day.weekday())
    return day.replace(day=1)


def shift(local: datetime.datetime, period: str, count: int) -> datetime.datetime:
    """``local`` moved back by ``count`` periods in local (wall-clock) time."""
    if period == "month":
        months = local.year * 12 + local.month - 1 - count
        return local.replace(year=months // 12, month=months % 12 + 1)
    step = {"hour": datetime.timedelta(hours=1), "day": datetime.timedelta(days=1), "week": datetime.timedelta(days=7)}
    return local - step[period] * count


def _aware(local_naive: datetime.datetime, zone: zoneinfo.ZoneInfo) -> datetime.datetime:
    return local_naive.replace(tzinfo=zone).astimezone(datetime.UTC)


def local_day_floor(ts: datetime.datetime, tz: str) -> datetime.datetime:
    """The start (UTC) of the local day of ``tz`` containing ``ts``: where daily figures of that zone may be cut."""
    zone = zoneinfo.ZoneInfo(tz)
    return _aware(period_start(ts.astimezone(zone).replace(tzinfo=None), "day"), zone)


def local_day_ceil(ts: datetime.datetime, tz: str) -> datetime.datetime:
    """The first start (UTC) of a local day of ``tz`` at or after ``ts``."""
    floor = local_day_floor(ts, tz)
    return floor if floor == ts else local_day_floor(floor + datetime.timedelta(hours=26), tz)


@dataclass(frozen=True)
class Window:
    """The range a preset shows, and the same span one range earlier (like for like: the week so far against the
    same days and hours of the week before)."""

    start: datetime.datetime
    end: datetime.datetime
    previous_start: datetime.datetime
    previous_end: datetime.datetime
    period: str
    through: datetime.date | None = None  # the last local day of a custom range; None: up to now


@dataclass(frozen=True)
class DayRange:
    """A custom range of the energy pages: the local days ``first`` through ``last`` of the site, both included."""

    first: datetime.date
    last: datetime.date

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


def day_range_period(days: int) -> str:
    """The buckets a custom range of ``days`` local days is shown in: about a dozen to sixty rows."""
    if days <= 2:
        return "hour"
    if days <= 62:
        return "day"
    return "week" if days <= 26 * 7 else "month"


def window_for(span: str | DayRange, *, now: datetime.datetime, tz: str) -> Window:
    """The window of a preset (up to now) or of a custom range of days (up to the end of its last day, or now if
    that is earlier), and the same span one range earlier."""
    if isinstance(span, DayRange):
        return _day_range_window(span, now=now, tz=tz)
    _, period, count = PERIODS[span]
    zone = zoneinfo.ZoneInfo(tz)
    local_now = now.astimezone(zone).replace(tzinfo=None)
    local_start = shift(period_start(local_now, period), period, count - 1)
    previous_start, previous_end = shift(local_start, period, count), shift(local_now, period, count)
    return Window(
        start=_aware(local_start, zone),
        end=now,
        previous_start=_aware(previous_start, zone),
        previous_end=_aware(previous_end, zone),
        period=period,
    )


def _day_range_window(span: DayRange, *, now: datetime.datetime, tz: str) -> Window:
    zone = zoneinfo.ZoneInfo(tz)
    local_start = datetime.datetime.combine(span.first, datetime.time())
    local_end = datetime.datetime.combine(span.last + datetime.timedelta(days=1), datetime.time())
    local_end = max(local_start, min(local_end, now.astimezone(zone).replace(tzinfo=None)))  # nothing after now
    return Window(
        start=_aware(local_start, zone),
        end=_aware(local_end, zone),
        previous_start=_aware(shift(local_start, "day", span.days), zone),
        previous_end=_aware(shift(local_end, "day", span.days), zone),
        period=day_range_period(span.days),
        through=span.last,
    )


@dataclass
class Bucket:
    start: datetime.datetime  # aware, in the site's zone
    kwh: float = 0.0
    cost: float | None = None
    co2e_kg: float = 0.0


def fold(hourly: list[tuple[datetime.datetime, float]], *, period: str, tz: str, tariff: Tariff | None) -> list[Bucket]:
    """Hourly kWh folded into local periods, each hour priced by the tariff of its local hour and weekday."""
    # A year is 8,760 hours, folded twice per page (the window and the one before): per hour only the zone
    # conversion and lookups. A day's, week's or month's start depends on the local date alone, so it is computed
    # once per date; prices come from the tariff's weekday x hour table. (Computing both per hour took 88 ms a year.)
    zone = zoneinfo.ZoneInfo(tz)
    prices = tariff.week_prices() if tariff is not None else None
    buckets: dict[datetime.datetime, Bucket] = {}
    date = key = bucket = bucket_key = None
    for hour_start, energy in hourly:
        local = hour_start.astimezone(zone)
        if period == "hour":
            key = period_start(local.replace(tzinfo=None), period)
        elif (local.year, local.month, local.day) != date:
            date = (local.year, local.month, local.day)
            key = period_start(local.replace(tzinfo=None), period)
        if key != bucket_key:
            bucket, bucket_key = buckets.get(key), key
            if bucket is None:
                bucket = buckets[key] = Bucket(start=key.replace(tzinfo=zone), cost=0.0 if tariff else None)
        bucket.kwh += energy
        if prices is not None:
            price = prices[local.weekday()][local.hour]
            bucket.cost = None if price is None or bucket.cost is None else bucket.cost + energy * price
    return [buckets[key] for key in sorted(buckets)]


# ---------------------------------------------------------------------------------------------------------------------
# The report of a set of devices (a site, or one device)
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class EnergyReport:
    """What an energy page shows; ``resolution`` and ``raw_from`` say where the figures came from."""

    window: Window
    buckets: list[Bucket]
    total_kwh: float
    previous_kwh: float
    cost: float | None
    previous_cost: float | None
    emission_factor: float
    resolution: str
    raw_from: datetime.datetime | None
    covered_start: datetime.datetime | None
    devices_counted: int
    currency: str = ""
    # Devices measuring heat output only: no electricity metric, so not counted (their heat is not electricity).
    devices_heat_only: int = 0
    previous_resolution: str = ""
    # The hours of the window before this were read from stored hourly totals (``StoredHours``), not computed; None:
    # none were.
    stored_until: datetime.datetime | None = None

    @property
    def co2e_kg(self) -> float:
        return self.total_kwh * self.emission_factor

    @property
    def previous_co2e_kg(self) -> float:
        return self.previous_kwh * self.emission_factor

    @property
    def change_percent(self) -> float | None:
        return None if not self.previous_kwh else (self.total_kwh - self.previous_kwh) / self.previous_kwh * 100


@dataclass(frozen=True)
class StoredHours:
    """The hourly kWh of exactly the report's sources, computed before and stored (``site_energy``): the whole hours
    before ``until`` are read by ``read(start, end)`` (``(hour, kWh)`` in order, the hours ``kwh`` gives a bucket)
    rather than computed from hourly rollups."""

    until: datetime.datetime
    read: Callable[[datetime.datetime, datetime.datetime], list[tuple[datetime.datetime, float]]]


def hourly_kwh(
    sources: list[tuple[int, object]], *, plan: DerivedPlan, tz: str, stored: StoredHours | None = None
) -> tuple[DerivedBuckets, datetime.datetime | None]:
    """The combined kWh per hour of ``sources`` over ``plan``, and where the stored hours end (None: none used).

    With ``stored``, the hours ``[plan.start, min(split, stored.until))`` are read from it and only the rest is
    computed: rollups up to the split, raw readings after it. An hour's figure does not depend on where a range of
    whole hours starts or ends (tests/telemetry/test_energy_materialized.py), so the two parts are the figures of the
    whole range; ``resolution``, ``raw_from`` and the range covered are the plan's, as without ``stored``."""
    cut = plan.start
    if stored is not None and plan.resolution == HOURLY:
        cut = max(plan.start, min(plan.split or plan.end, stored.until))
    if cut == plan.start:
        return kwh(sources, plan=plan, interval=REPORT_INTERVAL, tz=tz, combine=True).get(
            None, DerivedBuckets(start=plan.start)
        ), None
    computed = DerivedBuckets()
    if cut < plan.end:  # else all stored (a window before this one): no statement over the sources at all
        rest = DerivedPlan(resolution=HOURLY, start=cut, end=plan.end, split=plan.split)
        computed = kwh(sources, plan=rest, interval=REPORT_INTERVAL, tz=tz, combine=True).get(None, computed)
    return DerivedBuckets.of_plan(stored.read(plan.start, cut) + computed.points, plan), cut


def _cost(buckets: list[Bucket]) -> float | None:
    costs = [bucket.cost for bucket in buckets]
    return None if any(cost is None for cost in costs) else sum(costs)


def energy_report(
    *,
    sources: list[tuple[int, object]],
    span: str | DayRange,
    tz: str,
    emission_factor: float,
    tariff: Tariff | None,
    now: datetime.datetime,
    raw_retention_days: int | None = None,
    resolution: str = REPORT_RESOLUTION,
    devices_heat_only: int = 0,
    stored: StoredHours | None = None,
) -> EnergyReport:
    """The electricity of ``sources`` (series id, definition) over the window of ``span`` (a preset or a custom
    range of days) and the window before, in two computations of hourly totals (each one statement per kind of
    source), the hours ``stored`` has read from there instead."""
    window = window_for(span, now=now, tz=tz)

    def hourly(start, end) -> tuple[DerivedBuckets, datetime.datetime | None]:
        plan = derived_plan(
            start=start,
            end=end,
            interval=REPORT_INTERVAL,
            now=now,
            raw_retention_days=raw_retention_days,
            resolution=resolution,
        )
        return hourly_kwh(sources, plan=plan, tz=tz, stored=stored)

    (current, stored_until), (previous, _) = (
        hourly(window.start, window.end),
        hourly(window.previous_start, window.previous_end),
    )
    buckets = fold(current.points, period=window.period, tz=tz, tariff=tariff)
    previous_buckets = fold(previous.points, period=window.period, tz=tz, tariff=tariff)
    for bucket in buckets:
        bucket.co2e_kg = bucket.kwh * emission_factor
    return EnergyReport(
        window=window,
        buckets=buckets,
        total_kwh=current.total,
        previous_kwh=previous.total,
        cost=_cost(buckets) if tariff else None,
        previous_cost=_cost(previous_buckets) if tariff else None,
        emission_factor=emission_factor,
        resolution=current.resolution,
        raw_from=current.raw_from,
        covered_start=current.start,
        devices_counted=len(sources),
        devices_heat_only=devices_heat_only,
        currency=tariff.currency if tariff else "",
        previous_resolution=previous.resolution,
        stored_until=stored_until,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Heat pumps: COP over time, seasonal performance factor, degree days
# ---------------------------------------------------------------------------------------------------------------------

# An hour's contribution is max(0, base - its mean); the degree days of a range (or of a local day) are their sum / 24.
_DEGREE_HOURS_SQL = f"""
FROM unnest(%(ids)s::int4[]) AS s (id)
LEFT JOIN LATERAL (
    SELECT bucket, {AGGREGATE_SQL["avg"]} AS mean FROM telemetry_rollup_1h
    WHERE series_id = s.id AND bucket >= %(start)s AND bucket < %(end)s
) h ON true
"""
_DEGREE_DAYS_SQL = f"""
SELECT s.id, coalesce(sum(greatest(0, %(base)s - h.mean)) / 24.0, 0)
{_DEGREE_HOURS_SQL}
GROUP BY s.id
"""
_DEGREE_DAYS_BY_DAY_SQL = f"""
SELECT s.id, {local_bucket_sql("1d", "h.bucket")} AS day, sum(greatest(0, %(base)s - h.mean)) / 24.0
{_DEGREE_HOURS_SQL}
WHERE h.bucket IS NOT NULL
GROUP BY 1, 2
ORDER BY 1, 2
"""


def heating_degree_days(
    *, series_ids: list[int], start: datetime.datetime, end: datetime.datetime, base: float = DEGREE_DAY_BASE_C
) -> dict[int, float]:
    """Heating degree days of outdoor temperature series: the sum over hours of ``max(0, base - hourly mean) / 24``,
    from hourly rollups (hours not rolled up yet are not counted), one statement for all series."""
    if not series_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_DEGREE_DAYS_SQL, {"ids": series_ids, "start": start, "end": end, "base": base})
        return dict(cursor.fetchall())


def heating_degree_days_by_day_statement(
    *, series_ids: list[int], start: datetime.datetime, end: datetime.datetime, tz: str, base: float = DEGREE_DAY_BASE_C
) -> tuple[str, dict]:
    """The statement of ``heating_degree_days`` per local day of ``tz`` (rows ``(series id, day start, degree
    days)``, days without an hourly rollup left out), for storing its rows (``site_energy``): a day's figure is
    ``heating_degree_days`` over that day."""
    params = {"ids": series_ids, "start": start, "end": end, "base": base, **bucket_parameters("1d", tz)}
    return _DEGREE_DAYS_BY_DAY_SQL, params


@dataclass(frozen=True)
class StoredDays:
    """The daily figures of exactly the heat-pump page's sources in the site's local days, computed before and
    stored (``site_energy``): for the days in ``[start, end)`` before ``until`` (a local midnight),
    ``read(start, end, recent)`` gives ``{series id: (sum, [(day start, value)] of the days from recent on)}``
    (kWh of heat and electrical sources, degree days of outdoor temperatures), summed where they are stored rather
    than computed from hourly rollups."""

    until: datetime.datetime
    read: Callable[
        [datetime.datetime, datetime.datetime, datetime.datetime],
        dict[int, tuple[float, list[tuple[datetime.datetime, float]]]],
    ]


def _with_stored(
    ids: list[int],
    plan: DerivedPlan,
    head: dict[int | None, DerivedBuckets],
    stored_rows: dict,
    rest: dict[int | None, DerivedBuckets],
) -> dict[int | None, DerivedBuckets]:
    """Per series, the computed hours before the first stored day (``head``), the stored days and the computed days
    after them (``rest``), as ``kwh`` gives them for the whole ``plan`` (points only of the stored days read, the
    total of all of them)."""
    results = {}
    for series_id in ids:
        stored_total, stored_points = stored_rows.get(series_id, (0.0, []))
        before, after = head.get(series_id, DerivedBuckets()), rest.get(series_id, DerivedBuckets())
        points = before.points + stored_points + after.points
        results[series_id] = DerivedBuckets.of_plan(points, plan, total=before.total + stored_total + after.total)
    return results


@dataclass
class HeatPumpFigures:
    """One heat pump over a range: heat delivered, electricity used, their ratio (the seasonal performance factor),
    heating degree days and electricity per degree day; ``cop_days`` the daily ratio (COP over time) of the range's
    last ``RECENT_COP_DAYS`` local days (the days with heat and electricity both)."""

    device: object
    heat_kwh: float | None
    electricity_kwh: float | None
    degree_days: float | None
    cop_days: list[tuple[datetime.datetime, float]] = field(default_factory=list)

    @property
    def spf(self) -> float | None:
        if self.heat_kwh is None or not self.electricity_kwh:
            return None
        return self.heat_kwh / self.electricity_kwh

    @property
    def kwh_per_degree_day(self) -> float | None:
        if self.electricity_kwh is None or not self.degree_days:
            return None
        return self.electricity_kwh / self.degree_days


def _recent_days_start(end: datetime.datetime, tz: str) -> datetime.datetime:
    """The start of the first of the last ``RECENT_COP_DAYS`` local days of a range ending at ``end``."""
    zone = zoneinfo.ZoneInfo(tz)
    last_day = local_day_floor(end - datetime.timedelta(microseconds=1), tz).astimezone(zone).replace(tzinfo=None)
    return _aware(shift(last_day, "day", RECENT_COP_DAYS - 1), zone)


def heat_pump_figures(
    *,
    pumps: list[tuple[object, tuple[int, object] | None, tuple[int, object] | None, int | None]],
    start: datetime.datetime,
    end: datetime.datetime,
    tz: str,
    now: datetime.datetime,
    stored: StoredDays | None = None,
) -> tuple[list[HeatPumpFigures], DerivedPlan, datetime.datetime | None]:
    """Figures of each ``(device, heat source, electrical source, outdoor series id)``, ranked worst SPF first
    (pumps without an SPF last): two energy computations in daily buckets and one degree-day statement for the
    whole fleet; and where the stored days end (None: none used).

    With ``stored``, the local days from the first local midnight of the plan to ``min(split, stored.until)`` are
    read from it and only the rest is computed: the hours before that first midnight (a range that does not start at
    one, or a zone whose midnight is not on a UTC hour: the plan starts at the floored hour) and the days after the
    stored ones. A day's figure does not depend on where a range is cut at a local midnight (as an hour's,
    tests/telemetry/test_heat_pump_days.py), so the parts are the figures of the whole range."""
    plan = derived_plan(start=start, end=end, interval="1d", now=now, resolution=REPORT_RESOLUTION)
    heat_sources = [source for _, source, _, _ in pumps if source is not None]
    electrical_sources = [source for _, _, source, _ in pumps if source is not None]
    outdoor_ids = [series_id for *_, series_id in pumps if series_id is not None]
    first_day = cut = plan.start
    if stored is not None and plan.resolution == HOURLY:
        first_day = local_day_ceil(plan.start, tz)
        cut = local_day_floor(min(plan.split or plan.end, stored.until), tz)
        if cut <= first_day:
            first_day = cut = plan.start

    def computed(part: DerivedPlan) -> tuple[dict, dict, dict]:
        return (
            kwh(heat_sources, plan=part, interval="1d", tz=tz, combine=False),
            kwh(electrical_sources, plan=part, interval="1d", tz=tz, combine=False),
            heating_degree_days(series_ids=outdoor_ids, start=part.start, end=part.end),
        )

    recent = _recent_days_start(plan.end, tz)
    if cut == plan.start:
        heat, electricity, degree_days = computed(plan)
    else:
        # (heat, electricity, degree days) of the hours before the first stored day and of the days after them.
        head = computed(DerivedPlan(HOURLY, plan.start, first_day)) if first_day > plan.start else ({}, {}, {})
        rest = computed(DerivedPlan(HOURLY, cut, plan.end, split=plan.split))
        stored_rows = stored.read(first_day, cut, recent)
        heat = _with_stored([i for i, _ in heat_sources], plan, head[0], stored_rows, rest[0])
        electricity = _with_stored([i for i, _ in electrical_sources], plan, head[1], stored_rows, rest[1])
        degree_days = {
            series_id: head[2].get(series_id, 0.0)
            + stored_rows.get(series_id, (0.0, []))[0]
            + rest[2].get(series_id, 0.0)
            for series_id in outdoor_ids
        }
    figures = []
    for device, heat_source, electrical_source_, outdoor_id in pumps:
        heat_days = heat.get(heat_source[0]) if heat_source else None
        electrical_days = electricity.get(electrical_source_[0]) if electrical_source_ else None
        cop_days = []
        if heat_days and electrical_days:
            used = {day: value for day, value in electrical_days.points if day >= recent}
            cop_days = [
                (day, value / used[day]) for day, value in heat_days.points if day >= recent and used.get(day, 0) > 0
            ]
        figures.append(
            HeatPumpFigures(
                device=device,
                heat_kwh=heat_days.total if heat_days else None,
                electricity_kwh=electrical_days.total if electrical_days else None,
                degree_days=degree_days.get(outdoor_id) if outdoor_id is not None else None,
                cop_days=cop_days,
            )
        )
    figures.sort(key=lambda item: (item.spf is None, item.spf or 0.0, item.device.name))
    return figures, plan, (cut if cut != plan.start else None)
