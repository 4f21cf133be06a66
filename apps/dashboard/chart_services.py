"""Writes of saved charts and dashboards. Only the owner changes a chart or a dashboard; the series a chart or a
stat card names are resolved by the caller through ``device_list_for_user`` and checked again here against the
device type's metrics. Each write is one transaction."""

import datetime

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Max

from apps.dashboard.models import (
    MAX_CHART_SERIES,
    ChartRange,
    ChartSeries,
    Dashboard,
    DashboardItem,
    DashboardItemKind,
    SavedChart,
)
from apps.devices.models import Device, MetricDefinition

MAX_AXES = 2  # left and right


def _require_owner(*, user, owned) -> None:
    if owned.owner_id != user.pk:
        raise PermissionDenied("Only its owner may change this.")


def _metric_units(series: list[tuple[Device, str]]) -> dict[tuple[int, str], str]:
    """(device type, metric key) -> unit for the metrics named, defined by the devices' types."""
    rows = MetricDefinition.objects.filter(
        device_type_id__in={device.device_type_id for device, _ in series}, key__in={key for _, key in series}
    ).values_list("device_type_id", "key", "unit")
    return {(type_id, key): unit for type_id, key, unit in rows}


def _series_validate(series: list[tuple[Device, str]]) -> None:
    if not series:
        raise ValidationError({"series": "Pick at least one series."})
    if len(series) > MAX_CHART_SERIES:
        raise ValidationError({"series": f"{len(series)} series picked; a chart takes at most {MAX_CHART_SERIES}."})
    if len({(device.pk, key) for device, key in series}) != len(series):
        raise ValidationError({"series": "A series is listed twice."})
    units = _metric_units(series)
    unknown = [f"{device.uid}:{key}" for device, key in series if (device.device_type_id, key) not in units]
    if unknown:
        raise ValidationError({"series": f"Not a metric of the device's type: {', '.join(unknown)}."})
    distinct = list(dict.fromkeys(units[device.device_type_id, key] for device, key in series))
    if len(distinct) > MAX_AXES:
        shown = ", ".join(unit or "(no unit)" for unit in distinct)
        raise ValidationError({"series": f"A chart has two axes, one unit each; these series have {shown}."})


def _range_validate(range_: str, start: datetime.datetime | None, end: datetime.datetime | None) -> None:
    if range_ == ChartRange.CUSTOM:
        if start is None or end is None:
            raise ValidationError({"range_start": "A custom range needs a start and an end."})
        if start >= end:
            raise ValidationError({"range_end": "The end must be after the start."})


def chart_save(
    *,
    user,
    chart: SavedChart | None = None,
    title: str,
    shared: bool,
    series: list[tuple[Device, str]],
    range: str,
    range_start: datetime.datetime | None = None,
    range_end: datetime.datetime | None = None,
    aggregate: str = "avg",
    resolution: str = "auto",
    style: str = "line",
) -> SavedChart:
    """Create a chart (``chart`` None) or replace its configuration and series (its owner only)."""
    _series_validate(series)
    _range_validate(range, range_start, range_end)
    if range != ChartRange.CUSTOM:
        range_start = range_end = None
    with transaction.atomic():
        if chart is None:
            chart = SavedChart(owner=user, organization_id=user.organization_id)
        else:
            chart = SavedChart.objects.select_for_update().get(pk=chart.pk)
            _require_owner(user=user, owned=chart)
        for name, value in (
            ("title", title),
            ("shared", shared),
            ("range", range),
            ("range_start", range_start),
            ("range_end", range_end),
            ("aggregate", aggregate),
            ("resolution", resolution),
            ("style", style),
        ):
            setattr(chart, name, value)
        chart.save()
        chart.series.all().delete()
        ChartSeries.objects.bulk_create(
            ChartSeries(chart=chart, position=position, device=device, metric_key=key)
            for position, (device, key) in enumerate(series)
        )
    return chart


def chart_delete(*, user, chart: SavedChart) -> None:
    """Delete a chart; it leaves every dashboard that showed it."""
    with transaction.atomic():
        _require_owner(user=user, owned=chart)
        chart.delete()


def dashboard_save(*, user, dashboard: Dashboard | None = None, title: str, shared: bool) -> Dashboard:
    with transaction.atomic():
        if dashboard is None:
            dashboard = Dashboard(owner=user, organization_id=user.organization_id)
        else:
            dashboard = Dashboard.objects.select_for_update().get(pk=dashboard.pk)
            _require_owner(user=user, owned=dashboard)
        dashboard.title, dashboard.shared = title, shared
        dashboard.save()
    return dashboard


def dashboard_delete(*, user, dashboard: Dashboard) -> None:
    with transaction.atomic():
        _require_owner(user=user, owned=dashboard)
        dashboard.delete()


def _locked_for_owner(*, user, dashboard: Dashboard) -> Dashboard:
    locked = Dashboard.objects.select_for_update().get(pk=dashboard.pk)
    _require_owner(user=user, owned=locked)
    return locked


def _next_position(dashboard: Dashboard) -> int:
    top = dashboard.items.aggregate(top=Max("position"))["top"]
    return 0 if top is None else top + 1


def dashboard_chart_add(*, user, dashboard: Dashboard, chart: SavedChart) -> DashboardItem:
    """Append a chart the owner may see (the caller resolved it through ``chart_list_for_user``)."""
    with transaction.atomic():
        locked = _locked_for_owner(user=user, dashboard=dashboard)
        return DashboardItem.objects.create(
            dashboard=locked, position=_next_position(locked), kind=DashboardItemKind.CHART, chart=chart
        )


def dashboard_stat_add(*, user, dashboard: Dashboard, device: Device, metric_key: str) -> DashboardItem:
    """Append a stat card: the latest value of one series of a device the owner may see."""
    _series_validate([(device, metric_key)])
    with transaction.atomic():
        locked = _locked_for_owner(user=user, dashboard=dashboard)
        return DashboardItem.objects.create(
            dashboard=locked,
            position=_next_position(locked),
            kind=DashboardItemKind.STAT,
            device=device,
            metric_key=metric_key,
        )


def dashboard_item_remove(*, user, dashboard: Dashboard, item_id: int) -> None:
    with transaction.atomic():
        locked = _locked_for_owner(user=user, dashboard=dashboard)
        deleted, _ = locked.items.filter(pk=item_id).delete()
        if not deleted:
            raise ValidationError({"item": "No such item on this dashboard."})


def dashboard_item_move(*, user, dashboard: Dashboard, item_id: int, offset: int) -> None:
    """Swap the item with its neighbour before (``offset`` -1) or after (+1); at an end, nothing changes."""
    with transaction.atomic():
        locked = _locked_for_owner(user=user, dashboard=dashboard)
        items = list(locked.items.order_by("position"))
        index = next((i for i, item in enumerate(items) if item.pk == item_id), None)
        if index is None:
            raise ValidationError({"item": "No such item on this dashboard."})
        other = index + offset
        if not 0 <= other < len(items):
            return
        first, second = items[index], items[other]
        # Positions are unique: park one outside the range while the other takes its place.
        parked, first.position = first.position, _next_position(locked)
        first.save(update_fields=["position"])
        first.position, second.position = second.position, parked
        second.save(update_fields=["position"])
        first.save(update_fields=["position"])
