"""Reads of telemetry for a user: every one resolves devices through ``device_list_for_user`` first, so a series of
a device outside the user's sites is indistinguishable from one that does not exist.

Series queries, latest values and the derived figures (energy, volume, statistics) of a device; the computations
themselves live in ``queries`` and ``derived``, which check no permissions."""

import datetime
from collections.abc import Callable
from dataclasses import dataclass

from django.core.cache import cache
from django.db import connection
from django.db.models import Min, OuterRef, Q, Subquery

from apps.core.time import epoch_ms
from apps.devices.choices import MetricKind
from apps.devices.energy import POWER_UNITS, site_tariff
from apps.devices.models import Device, DeviceType, MetricDefinition
from apps.devices.selectors import (
    device_get_for_user,
    device_list_for_user,
    site_list_for_user,
    user_configures_organization,
)
from apps.telemetry import energy, queries, site_energy
from apps.telemetry.derived import (
    DerivedBuckets,
    bucket_zone,
    derived_plan,
    energy_buckets,
    statistics_compute,
    volume_buckets,
)
from apps.telemetry.models import DeadLetter, LatestValue, Series
from apps.telemetry.queries import SeriesQuery, SeriesRef


class DeviceNotFound(Exception):
    """No such device among those the user may see (whether it exists elsewhere is not revealed)."""

    def __init__(self, uid: str):
        super().__init__(uid)
        self.uid = uid


class MetricNotFound(Exception):
    """The device is visible but neither defines nor has ever reported this metric."""

    def __init__(self, uid: str, metric: str):
        super().__init__(uid, metric)
        self.uid, self.metric = uid, metric


class MetricUnsuitable(Exception):
    """The device has the metric, but not of the kind a derived figure needs (power for energy, a totalizer for
    volume). The message says why."""


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    """A series request resolved for a user: the series they may read and, for a range that ended over an hour ago,
    the version of its answer (``queries.series_version``; None for a recent range, which is never cached)."""

    refs: list[SeriesRef]
    query: SeriesQuery
    now: datetime.datetime
    version: str | None


# The visible devices (the scoped queryset's SQL) joined to the pairs asked for, with each pair's definition and
# series. Plain SQL around the scope: the same statement through the ORM (array subqueries of JSON objects) costs more
# to compile than to run, and this runs on every series request, cached answer or not.
_SERIES_RESOLVE = """
    SELECT d.uid, p.metric, d.site_id, m.id IS NOT NULL, m.unit, m.precision, s.id
    FROM ({scope}) d
    JOIN unnest(%s::text[], %s::text[]) AS p(uid, metric) ON p.uid = d.uid
    LEFT JOIN {definitions} m ON m.device_type_id = d.device_type_id AND m.key = p.metric
    LEFT JOIN {series} s ON s.device_id = d.id AND s.metric_key = p.metric
"""


def series_for_user(*, user, pairs: list[tuple[str, str]]) -> list[SeriesRef]:
    """Resolve ``(device uid, metric key)`` pairs in request order, in one statement whatever their number.

    A metric the device type defines but that never reported resolves to an empty series (``id`` None); one that is
    neither defined nor stored raises ``MetricNotFound``.
    """
    # Unordered: the listing's order (organization, site, device name) would join both tables only to sort rows
    # that the pairs' order replaces anyway.
    scope = (
        device_list_for_user(user=user)
        .filter(uid__in={uid for uid, _ in pairs})
        .order_by()
        .values("id", "uid", "site_id", "device_type_id")
    )
    scope_sql, scope_params = scope.query.sql_with_params()
    sql = _SERIES_RESOLVE.format(
        scope=scope_sql, definitions=MetricDefinition._meta.db_table, series=Series._meta.db_table
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*scope_params, [uid for uid, _ in pairs], [metric for _, metric in pairs]])
        found = {(uid, metric): rest for uid, metric, *rest in cursor.fetchall()}
    visible = {uid for uid, _ in found}
    refs = []
    for uid, metric in pairs:
        if uid not in visible:
            raise DeviceNotFound(uid)
        site_id, defined, unit, precision, series_id = found[uid, metric]
        if series_id is None and not defined:
            raise MetricNotFound(uid, metric)
        refs.append(
            SeriesRef(id=series_id, device=uid, metric=metric, unit=unit or "", site_id=site_id, precision=precision)
        )
    return refs


def series_plan_for_user(*, user, query: SeriesQuery, now: datetime.datetime | None = None) -> SeriesPlan:
    """Resolve ``query`` for ``user``: the series they may read and, for a historical range, its version.

    Permissions are resolved on every call, cached answer or not, so a revoked grant takes effect at once. Nothing
    is fetched yet, so a client that holds the version's answer (``If-None-Match``) costs no data statement. Raises
    ``DeviceNotFound`` and ``MetricNotFound``.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    refs = series_for_user(user=user, pairs=query.pairs)
    cacheable = queries.is_cacheable(end=query.end, now=now)
    version = queries.series_version(refs=refs, query=query) if cacheable else None
    return SeriesPlan(refs=refs, query=query, now=now, version=version)


def series_data(*, plan: SeriesPlan) -> queries.SeriesData:
    """The data of a resolved request, always from the database. Raises ``queries.TooManyRows``."""
    return queries.series_fetch(refs=plan.refs, query=plan.query, now=plan.now)


def series_body(*, plan: SeriesPlan, encoding: str, encode: Callable[[queries.SeriesData], bytes]) -> bytes:
    """The answer of a resolved request encoded by ``encode`` (named ``encoding``), cached as those bytes in Redis
    for a historical range: a hit costs one cache read and no decoding, re-encoding or hashing of the points.
    Raises ``queries.TooManyRows``."""
    if plan.version is None:
        return encode(series_data(plan=plan))
    key = queries.cache_key(version=plan.version, encoding=encoding)
    body = cache.get(key)
    if body is None:
        body = encode(series_data(plan=plan))
        cache.set(key, body, timeout=queries.CACHE_TTL_SECONDS)
    return body


def _latest_rows(latest):
    """Latest values with their metric's unit and display name (from the series' device's type), by metric key."""
    definitions = MetricDefinition.objects.filter(
        device_type_id=OuterRef("series__device__device_type_id"), key=OuterRef("series__metric_key")
    )
    return (
        latest.annotate(
            unit=Subquery(definitions.values("unit")[:1]), display_name=Subquery(definitions.values("display_name")[:1])
        )
        .order_by("series__device_id", "series__metric_key")
        .values_list("series__device_id", "series__metric_key", "value", "ts", "unit", "display_name")
    )


def _latest_value(metric, value, ts, unit, display_name) -> dict:
    return {
        "metric": metric,
        "value": value,
        "ts": epoch_ms(ts),
        "unit": unit or "",
        "display_name": display_name or metric,
    }


def latest_values_for_devices(devices) -> dict[int, list[dict]]:
    """The latest value of every metric of each of ``devices`` (already scoped by the caller, e.g. a page of the
    registry's list), by device id, in one statement whatever their number."""
    by_device: dict[int, list[dict]] = {device.id: [] for device in devices}
    for device_id, *row in _latest_rows(LatestValue.objects.filter(series__device_id__in=list(by_device))):
        by_device[device_id].append(_latest_value(*row))
    return by_device


def latest_values_for_device(*, user, uid: str) -> dict:
    """The latest value of every metric of a visible device, with its unit and display name, in one statement
    after the device lookup. Raises ``DeviceNotFound``."""
    device = device_get_for_user(user=user, uid=uid)
    if device is None:
        raise DeviceNotFound(uid)
    rows = _latest_rows(LatestValue.objects.filter(series__device_id=device.id))
    return {"device": device.uid, "values": [_latest_value(*row) for _, *row in rows]}


# ---------------------------------------------------------------------------------------------------------------------
# Derived figures of one device (energy, volume, statistics): the response bodies, timestamps in epoch ms
# ---------------------------------------------------------------------------------------------------------------------


def _visible_device(*, user, uid: str):
    device = device_get_for_user(user=user, uid=uid)
    if device is None:
        raise DeviceNotFound(uid)
    return device


def _device_metrics(device, keys: list[str]) -> tuple[dict[str, MetricDefinition], dict[str, int]]:
    """Definitions and series ids of ``keys`` on ``device``, in two statements.

    A key with neither raises ``MetricNotFound``; one with only a definition has never reported (no series id).
    """
    definitions = {
        definition.key: definition
        for definition in MetricDefinition.objects.filter(device_type_id=device.device_type_id, key__in=keys)
    }
    series_ids = dict(Series.objects.filter(device=device, metric_key__in=keys).values_list("metric_key", "id"))
    for key in keys:
        if key not in definitions and key not in series_ids:
            raise MetricNotFound(device.uid, key)
    return definitions, series_ids


def _source(result: DerivedBuckets, plan) -> dict:
    """Where a derived figure came from, as the API and the pages say it."""
    return {
        "resolution": plan.resolution,
        "raw_from": epoch_ms(plan.split) if plan.split else None,
        "covered_start": epoch_ms(plan.start),
        "covered_end": epoch_ms(plan.end),
    }


def device_energy_for_user(
    *,
    user,
    uid: str,
    metric: str,
    start: datetime.datetime,
    end: datetime.datetime,
    interval: str,
    tz: str,
    resolution: str = "auto",
    now: datetime.datetime | None = None,
) -> dict:
    """kWh and CO2e (the site's emission factor) per bucket and in total from a power metric of a visible device,
    from raw readings or hourly rollups (``derived.derived_plan``).

    Raises ``DeviceNotFound``, ``MetricNotFound``, ``MetricUnsuitable`` for a metric not in W, kW or MW, and
    ``derived.IntervalNeedsRaw``.
    """
    device = _visible_device(user=user, uid=uid)
    definitions, series_ids = _device_metrics(device, [metric])
    definition, series_id = definitions.get(metric), series_ids.get(metric)
    unit = definition.unit if definition else ""
    if unit not in POWER_UNITS:
        raise MetricUnsuitable(f"{metric!r} is in {unit or 'no unit'!r}; energy needs a power metric in W, kW or MW.")
    factor = float(device.site.emission_factor_kg_per_kwh)
    plan = derived_plan(
        start=start,
        end=end,
        interval=interval,
        now=now,
        raw_retention_days=device.device_type.raw_retention_days,
        resolution=resolution,
    )
    result = (
        energy_buckets(
            series_id=series_id,
            unit_factor=POWER_UNITS[unit],
            start=start,
            end=end,
            interval=interval,
            tz=tz,
            plan=plan,
        )
        if series_id is not None
        else DerivedBuckets()
    )
    return {
        "start": epoch_ms(start),
        "end": epoch_ms(end),
        "interval": interval,
        "tz": bucket_zone(interval, tz),
        **_source(result, plan),
        "emission_factor_kg_per_kwh": factor,
        "series": [
            {
                "device": device.uid,
                "metric": metric,
                "unit": "kWh",
                "source_unit": unit,
                "columns": ["ts", "energy_kwh", "co2e_kg"],
                "points": [[epoch_ms(bucket), kwh, kwh * factor] for bucket, kwh in result.points],
                "total": {"energy_kwh": result.total, "co2e_kg": result.total * factor},
            }
        ],
    }


def device_volume_for_user(
    *,
    user,
    uid: str,
    metric: str,
    start: datetime.datetime,
    end: datetime.datetime,
    interval: str,
    tz: str,
    resolution: str = "auto",
    now: datetime.datetime | None = None,
) -> dict:
    """Consumption per bucket and in total from a totalizer metric of a visible device (counter resets handled),
    from raw readings or hourly rollups.

    Raises ``DeviceNotFound``, ``MetricNotFound``, ``MetricUnsuitable`` for a metric that is not a totalizer, and
    ``derived.IntervalNeedsRaw``.
    """
    device = _visible_device(user=user, uid=uid)
    definitions, series_ids = _device_metrics(device, [metric])
    definition, series_id = definitions.get(metric), series_ids.get(metric)
    if definition is None or definition.kind != MetricKind.TOTALIZER:
        raise MetricUnsuitable(f"{metric!r} is not a totalizer metric.")
    plan = derived_plan(
        start=start,
        end=end,
        interval=interval,
        now=now,
        raw_retention_days=device.device_type.raw_retention_days,
        resolution=resolution,
    )
    result = (
        volume_buckets(series_id=series_id, start=start, end=end, interval=interval, tz=tz, plan=plan)
        if series_id is not None
        else DerivedBuckets()
    )
    return {
        "start": epoch_ms(start),
        "end": epoch_ms(end),
        "interval": interval,
        "tz": bucket_zone(interval, tz),
        **_source(result, plan),
        "series": [
            {
                "device": device.uid,
                "metric": metric,
                "unit": definition.unit,
                "columns": ["ts", "volume"],
                "points": [[epoch_ms(bucket), volume] for bucket, volume in result.points],
                "total": {"volume": result.total},
            }
        ],
    }


def device_statistics_for_user(
    *, user, uid: str, metrics: list[str], start: datetime.datetime, end: datetime.datetime
) -> dict:
    """avg, min, max and count of each metric of a visible device over ``[start, end)``, plus the total energy of a
    power metric and the volume of a totalizer. Raises ``DeviceNotFound`` and ``MetricNotFound``."""
    device = _visible_device(user=user, uid=uid)
    definitions, series_ids = _device_metrics(device, metrics)
    stats = statistics_compute(series_ids=list(series_ids.values()), start=start, end=end) if series_ids else {}
    factor = float(device.site.emission_factor_kg_per_kwh)
    series = []
    for key in metrics:
        definition, series_id = definitions.get(key), series_ids.get(key)
        unit = definition.unit if definition else ""
        row = stats.get(series_id, {"avg": None, "min": None, "max": None, "count": 0})
        item = {"device": device.uid, "metric": key, "unit": unit, **row}
        if unit in POWER_UNITS:
            energy = (
                energy_buckets(
                    series_id=series_id, unit_factor=POWER_UNITS[unit], start=start, end=end, interval="1d"
                ).total
                if series_id is not None
                else 0.0
            )
            item.update(energy_kwh=energy, co2e_kg=energy * factor)
        if definition is not None and definition.kind == MetricKind.TOTALIZER:
            item["volume"] = (
                volume_buckets(series_id=series_id, start=start, end=end, interval="1d").total
                if series_id is not None
                else 0.0
            )
        series.append(item)
    return {"start": epoch_ms(start), "end": epoch_ms(end), "series": series}


def dead_letters_scope(queryset, organization_id: int):
    """The letters an organization may see and replay: those its senders' sites received, and (letters from before
    sites were recorded) those naming one of its devices. Letters of unknown senders only platform operators see."""
    devices = Device.objects.filter(site__organization=organization_id).values("uid")
    return queryset.filter(Q(site__organization=organization_id) | Q(site__isnull=True, device_uid__in=devices))


def dead_letter_list_for_user(*, user):
    """Dead letters for diagnosis and replay: an organization's admins see its own (``dead_letters_scope``),
    superusers all, anyone else none."""
    queryset = DeadLetter.objects.all()
    if user.is_superuser:
        return queryset
    if not user_configures_organization(user=user):
        return queryset.none()
    return dead_letters_scope(queryset, user.organization_id)


# ---------------------------------------------------------------------------------------------------------------------
# Energy pages: a site's or a device's electricity, and a site's heat pumps
# ---------------------------------------------------------------------------------------------------------------------


def site_get_for_user(*, user, site_id: int):
    """A site the user may see, or None."""
    return site_list_for_user(user=user).filter(id=site_id).first()


def _report(devices, *, site, span: str | energy.DayRange, now, whole_site: bool = False) -> energy.EnergyReport:
    """The report of ``devices``; ``whole_site``: they are the site's active devices, whose hourly totals may be
    stored (``site_energy``: used only if stored for exactly these sources)."""
    retention = DeviceType.objects.filter(
        id__in={device.device_type_id for device in devices}, raw_retention_days__isnull=False
    ).aggregate(shortest=Min("raw_retention_days"))["shortest"]
    sources, heat_only = energy.electrical_sources(devices)
    stored = site_energy.site_energy_stored(site_id=site.id, sources=sources) if whole_site else None
    return energy.energy_report(
        sources=sources,
        span=span,
        tz=site.timezone,
        emission_factor=float(site.emission_factor_kg_per_kwh),
        tariff=site_tariff(site),
        now=now,
        raw_retention_days=retention or None,
        devices_heat_only=heat_only,
        stored=stored,
    )


def site_energy_report_for_user(*, user, site_id: int, span: str | energy.DayRange, now: datetime.datetime):
    """The electricity of every device of a visible site over a preset or a custom range of the site's days
    (``energy.energy_report``), or None for a site the user may not see."""
    site = site_get_for_user(user=user, site_id=site_id)
    if site is None:
        return None
    # Rows, not model instances: the report needs each device's id and type only.
    devices = list(
        device_list_for_user(user=user)
        .filter(site=site, is_active=True)
        .order_by()
        .values_list("id", "device_type_id", named=True)
    )
    return site, _report(devices, site=site, span=span, now=now, whole_site=True)


def device_energy_report_for_user(*, user, uid: str, span: str | energy.DayRange, now: datetime.datetime):
    """The electricity of one visible device, or None."""
    device = device_get_for_user(user=user, uid=uid)
    if device is None:
        return None
    return device, _report([device], site=device.site, span=span, now=now)


def site_heat_pumps_for_user(*, user, site_id: int, span: str | energy.DayRange, now: datetime.datetime):
    """The site's heat pumps (devices whose type marks a heat output metric), ranked worst seasonal performance
    factor first over the window of a preset or a custom range of days, with degree days where an outdoor
    temperature is marked: ``(site, window, figures, plan, stored_until)``, the days before ``stored_until`` read
    from the site's stored days (``site_energy``: used only if stored for exactly these sources and the site's
    zone); None for a site the user may not see."""
    site = site_get_for_user(user=user, site_id=site_id)
    if site is None:
        return None
    # Rows, not model instances (1,000 of those took about 65 ms): the page shows a pump's uid and name only.
    devices = list(
        device_list_for_user(user=user)
        .filter(site=site, is_active=True)
        .order_by()
        .values_list("id", "device_type_id", "uid", "name", named=True)
    )
    pumps = energy.heat_pump_sources(devices)
    stored = site_energy.heat_pump_days_stored(site_id=site.id, pumps=pumps, tz=site.timezone)
    window = energy.window_for(span, now=now, tz=site.timezone)
    figures, plan, stored_until = energy.heat_pump_figures(
        pumps=pumps, start=window.start, end=window.end, tz=site.timezone, now=now, stored=stored
    )
    return site, window, figures, plan, stored_until
