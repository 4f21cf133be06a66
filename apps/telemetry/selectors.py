"""Reads of telemetry for a user: every one resolves devices through ``device_list_for_user`` first, so a series of
a device outside the user's sites is indistinguishable from one that does not exist."""

import datetime
from dataclasses import dataclass

from django.core.cache import cache
from django.db.models import OuterRef, Subquery

from apps.core.time import epoch_ms
from apps.devices.models import MetricDefinition
from apps.devices.selectors import device_get_for_user, device_list_for_user
from apps.telemetry import queries
from apps.telemetry.models import LatestValue, Series
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


@dataclass(frozen=True, slots=True)
class SeriesResult:
    payload: dict
    cacheable: bool
    digest: str | None  # hash of the canonical parameters and the data; None when not cacheable


def series_for_user(*, user, pairs: list[tuple[str, str]]) -> list[SeriesRef]:
    """Resolve ``(device uid, metric key)`` pairs in request order, in three statements whatever their number.

    A metric the device type defines but that never reported resolves to an empty series (``id`` None); one that is
    neither defined nor stored raises ``MetricNotFound``.
    """
    uids = {uid for uid, _ in pairs}
    devices = {device.uid: device for device in device_list_for_user(user=user).filter(uid__in=uids)}
    for uid, _ in pairs:
        if uid not in devices:
            raise DeviceNotFound(uid)
    units = {
        (type_id, key): unit
        for type_id, key, unit in MetricDefinition.objects.filter(
            device_type_id__in={device.device_type_id for device in devices.values()}
        ).values_list("device_type_id", "key", "unit")
    }
    series_ids = {
        (device_id, key): series_id
        for series_id, device_id, key in Series.objects.filter(
            device_id__in=[device.id for device in devices.values()], metric_key__in={metric for _, metric in pairs}
        ).values_list("id", "device_id", "metric_key")
    }
    refs = []
    for uid, metric in pairs:
        device = devices[uid]
        series_id = series_ids.get((device.id, metric))
        unit = units.get((device.device_type_id, metric))
        if series_id is None and unit is None:
            raise MetricNotFound(uid, metric)
        refs.append(SeriesRef(id=series_id, device=uid, metric=metric, unit=unit or "", site_id=device.site_id))
    return refs


def series_query_for_user(*, user, query: SeriesQuery, now: datetime.datetime | None = None) -> SeriesResult:
    """The series response for ``query``, from the cache when the range ended over an hour ago.

    Permissions are resolved on every call, cached or not, so a revoked grant takes effect at once. Raises
    ``DeviceNotFound``, ``MetricNotFound`` and ``queries.TooManyRows``.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    refs = series_for_user(user=user, pairs=query.pairs)
    if not queries.is_cacheable(end=query.end, now=now):
        return SeriesResult(payload=queries.series_fetch(refs=refs, query=query, now=now), cacheable=False, digest=None)
    key = queries.cache_key(refs=refs, query=query)
    entry = cache.get(key)
    if entry is None:
        payload = queries.series_fetch(refs=refs, query=query, now=now)
        entry = {"digest": queries.payload_digest(payload, salt=key), "payload": payload}
        cache.set(key, entry, timeout=queries.CACHE_TTL_SECONDS)
    return SeriesResult(payload=entry["payload"], cacheable=True, digest=entry["digest"])


def latest_values_for_device(*, user, uid: str) -> dict:
    """The latest value of every metric of a visible device, with its unit and display name, in one statement
    after the device lookup. Raises ``DeviceNotFound``."""
    device = device_get_for_user(user=user, uid=uid)
    if device is None:
        raise DeviceNotFound(uid)
    definitions = MetricDefinition.objects.filter(
        device_type_id=device.device_type_id, key=OuterRef("series__metric_key")
    )
    rows = (
        LatestValue.objects.filter(series__device_id=device.id)
        .annotate(
            unit=Subquery(definitions.values("unit")[:1]), display_name=Subquery(definitions.values("display_name")[:1])
        )
        .order_by("series__metric_key")
        .values_list("series__metric_key", "value", "ts", "unit", "display_name")
    )
    return {
        "device": device.uid,
        "values": [
            {
                "metric": metric,
                "value": value,
                "ts": epoch_ms(ts),
                "unit": unit or "",
                "display_name": display_name or metric,
            }
            for metric, value, ts, unit, display_name in rows
        ],
    }
