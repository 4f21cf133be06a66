"""Reads of saved charts and dashboards, scoped by the sites the user may see (``device_list_for_user``).

A chart is visible to its owner, and to the owner's organization when shared, and in both cases only while every
one of its series is on a device the user may see: a chart with one series of another site is not shown at all, so
its title and other series reveal nothing either. A dashboard follows the same rule over every series of its charts
and stat cards. Each rule is one ``NOT EXISTS`` condition, whatever the number of charts.
"""

from dataclasses import dataclass

from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet

from apps.dashboard.models import ChartSeries, Dashboard, DashboardItem, SavedChart
from apps.devices.models import Device
from apps.devices.selectors import device_list_for_user, metric_definitions_by_type


def _owned_or_shared(user) -> Q:
    if user.is_superuser:
        return Q()
    return Q(owner_id=user.pk) | Q(shared=True, organization_id=user.organization_id)


def _invisible_devices(user) -> QuerySet[Device]:
    return Device.objects.exclude(pk__in=device_list_for_user(user=user).order_by().values("pk"))


def chart_list_for_user(*, user) -> QuerySet[SavedChart]:
    """Charts the user may open: own or shared with the organization, with no series the user may not see."""
    if not user.is_authenticated:
        return SavedChart.objects.none()
    hidden_series = ChartSeries.objects.filter(chart=OuterRef("pk"), device__in=_invisible_devices(user))
    return (
        SavedChart.objects.filter(_owned_or_shared(user))
        .exclude(Exists(hidden_series))
        .select_related("owner")
        .order_by("title", "id")
    )


def chart_get_for_user(*, user, chart_id: int) -> SavedChart | None:
    return chart_list_for_user(user=user).filter(pk=chart_id).first()


def dashboard_list_for_user(*, user) -> QuerySet[Dashboard]:
    """Dashboards the user may open: own or shared, with no chart series and no stat card the user may not see."""
    if not user.is_authenticated:
        return Dashboard.objects.none()
    invisible = _invisible_devices(user)
    hidden_stat = DashboardItem.objects.filter(dashboard=OuterRef("pk"), device__in=invisible)
    hidden_chart_series = ChartSeries.objects.filter(
        chart__in=DashboardItem.objects.filter(dashboard=OuterRef(OuterRef("pk"))).values("chart_id"),
        device__in=invisible,
    )
    return (
        Dashboard.objects.filter(_owned_or_shared(user))
        .exclude(Exists(hidden_stat))
        .exclude(Exists(hidden_chart_series))
        .select_related("owner")
        .order_by("title", "id")
    )


def dashboard_get_for_user(*, user, dashboard_id: int) -> Dashboard | None:
    return dashboard_list_for_user(user=user).filter(pk=dashboard_id).first()


# ---------------------------------------------------------------------------------------------------------------------
# What the page's script draws
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesLabel:
    device: str  # uid, as the series API names it
    metric: str
    label: str
    unit: str
    site_id: int


def _series_labels(rows: list[tuple[Device, str]]) -> list[SeriesLabel]:
    by_type = metric_definitions_by_type(device.device_type_id for device, _ in rows)
    definitions = {(type_id, d.key): d for type_id, items in by_type.items() for d in items}
    labels = []
    for device, key in rows:
        definition = definitions.get((device.device_type_id, key))
        name = definition.display_name if definition else key
        labels.append(
            SeriesLabel(
                device.uid, key, f"{device.name} · {name}", definition.unit if definition else "", device.site_id
            )
        )
    return labels


def chart_configs(charts: list[SavedChart]) -> dict[int, dict]:
    """The configuration the chart script draws, per chart id: three statements for any number of charts."""
    series = list(
        ChartSeries.objects.filter(chart__in=[chart.pk for chart in charts])
        .select_related("device")
        .order_by("chart_id", "position")
    )
    labels = _series_labels([(row.device, row.metric_key) for row in series])
    by_chart: dict[int, list[dict]] = {chart.pk: [] for chart in charts}
    for row, label in zip(series, labels, strict=True):
        by_chart[row.chart_id].append(label.__dict__)
    return {
        chart.pk: {
            "id": chart.pk,
            "title": chart.title,
            "range": chart.range,
            "start": chart.range_start.isoformat() if chart.range_start else None,
            "end": chart.range_end.isoformat() if chart.range_end else None,
            "aggregate": chart.aggregate,
            "resolution": chart.resolution,
            "style": chart.style,
            "series": by_chart[chart.pk],
        }
        for chart in charts
    }


@dataclass(frozen=True)
class DashboardCell:
    item: DashboardItem
    chart: dict | None  # chart_configs' entry
    stat: SeriesLabel | None


def dashboard_cells_for_user(*, user, dashboard: Dashboard) -> list[DashboardCell]:
    """The dashboard's items in order, as this user sees them: a private chart of the owner shows to the owner
    only (and a chart with a series the user may not see never reaches here: the dashboard itself is hidden)."""
    visible = chart_list_for_user(user=user)
    items = list(
        dashboard.items.select_related("device")
        .prefetch_related(Prefetch("chart", queryset=SavedChart.objects.all()))
        .order_by("position")
    )
    visible_ids = set(visible.filter(pk__in=[i.chart_id for i in items if i.chart_id]).values_list("pk", flat=True))
    configs = chart_configs([item.chart for item in items if item.chart_id in visible_ids])
    stats = iter(_series_labels([(item.device, item.metric_key) for item in items if item.device_id]))
    cells = []
    for item in items:
        if item.device_id:
            cells.append(DashboardCell(item, None, next(stats)))
        elif item.chart_id in visible_ids:
            cells.append(DashboardCell(item, configs[item.chart_id], None))
    return cells


def chart_series_choices_for_user(*, user) -> dict:
    """What the chart builder and the stat card picker offer: the user's devices and the metrics of their types, as
    plain values (two statements; no model instances, the list may hold thousands of devices)."""
    devices = list(
        device_list_for_user(user=user)
        .order_by("site__name", "name", "uid")
        .values("uid", "name", "site__name", "device_type_id")
    )
    by_type = metric_definitions_by_type({device["device_type_id"] for device in devices})
    return {
        "devices": [
            {"uid": d["uid"], "name": d["name"], "site": d["site__name"], "type": d["device_type_id"]} for d in devices
        ],
        "types": {
            str(type_id): [{"key": m.key, "label": m.display_name, "unit": m.unit} for m in metrics]
            for type_id, metrics in by_type.items()
        },
    }
