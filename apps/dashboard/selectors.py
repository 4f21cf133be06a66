"""Reads behind the dashboard pages, each built on the permission-scoped selectors of the devices, telemetry and
alerts apps (``device_list_for_user``, ``alert_list_for_user``, ...), so a page can show nothing a user may not see.

Every figure of a page is one SQL statement over all devices at once (status and counters are computed in the
database from ``last_seen`` and the type's ``offline_after``), so the number of queries a page makes does not grow
with the fleet.
"""

import datetime
from dataclasses import dataclass, field
from functools import cached_property

from django.db.models import (
    Count,
    Exists,
    F,
    Func,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce

from apps.alerts.choices import OPEN_STATUSES, Severity
from apps.alerts.models import Alert
from apps.alerts.selectors import alert_list_for_user
from apps.devices.choices import DeviceStatus
from apps.devices.models import Device, Gateway, Site
from apps.devices.selectors import (
    device_list_for_user,
    device_status_q,
    devices_with_status,
    gateway_list_for_user,
    metric_definitions_by_type,
    site_list_for_user,
    user_can_operate_site,
)
from apps.telemetry.models import LatestValue, Reading, Series

KEY_METRICS_PER_DEVICE = 3

# ---------------------------------------------------------------------------------------------------------------------
# Site scope: the sites a user may see, narrowed by the header's site switcher
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class SiteScope:
    """The user's sites (the switcher's options) and the one chosen, if any; ``ids`` are the sites a page shows."""

    user: object
    sites: list[Site]
    selected: Site | None = None
    _operable: frozenset[int] | None = field(default=None, repr=False)

    @property
    def ids(self) -> list[int]:
        return [self.selected.id] if self.selected else [site.id for site in self.sites]

    @cached_property
    def devices(self) -> QuerySet[Device]:
        """The devices of the shown sites; built once per request (the site lookup behind it costs queries)."""
        return device_list_for_user(user=self.user).filter(site_id__in=self.ids)

    def alerts(self) -> QuerySet[Alert]:
        """The alerts of the shown sites, newest first (the alert pages narrow them with ``AlertFilterSet``)."""
        return alert_list_for_user(user=self.user).filter(device__site_id__in=self.ids)

    @property
    def operable_site_ids(self) -> frozenset[int]:
        """Sites where the user may acknowledge and resolve: one check per site (not per alert row)."""
        if self._operable is None:
            self._operable = frozenset(
                site.id for site in self.sites if user_can_operate_site(user=self.user, site=site)
            )
        return self._operable


def site_scope_for_user(*, user, requested: str | int | None) -> SiteScope:
    """The user's sites and, when ``requested`` names one of them, that one; anything else means all of them
    (an id outside the user's sites is ignored rather than revealed)."""
    sites = list(site_list_for_user(user=user).order_by("name", "id"))
    selected = None
    if requested not in (None, "", "all"):
        selected = next((site for site in sites if str(site.id) == str(requested)), None)
    return SiteScope(user=user, sites=sites, selected=selected)


# ---------------------------------------------------------------------------------------------------------------------
# Overview
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OverviewCounters:
    devices_total: int
    devices_online: int
    devices_offline: int
    devices_never_seen: int
    devices_inactive: int
    alerts: dict[str, int]  # open alerts by severity, every severity present
    readings_per_minute: int
    newest_reading: datetime.datetime | None
    ingest_lag_seconds: int | None


def overview_counters(*, scope: SiteScope, now: datetime.datetime) -> OverviewCounters:
    """The overview's cards, in four statements whatever the fleet size.

    Readings per minute counts stored readings with a timestamp in the last minute on the shown sites' series: an
    index range scan per series on the readings key (series, ts), within the newest chunk on TimescaleDB. Ingest
    lag is the age of the newest stored reading (the newest ``LatestValue.ts``): it grows when devices, the broker
    or the listener stall, which is what an operator needs to notice.
    """
    devices = scope.devices
    status_counts = devices.order_by().aggregate(
        total=Count("id"),
        **{status.value: Count("id", filter=device_status_q(status, now)) for status in DeviceStatus},
    )
    by_severity = dict(
        scope.alerts()
        .filter(status__in=OPEN_STATUSES)
        .order_by()
        .values_list("severity")
        .annotate(n=Count("id"))
        .values_list("severity", "n")
    )
    series_ids = Series.objects.filter(device__in=devices.order_by().values("id")).values("id")
    readings = Reading.objects.filter(
        series_id__in=series_ids, ts__gt=now - datetime.timedelta(minutes=1), ts__lte=now
    ).count()
    newest = LatestValue.objects.filter(series_id__in=series_ids).aggregate(newest=Max("ts"))["newest"]
    lag = max(0, int((now - newest).total_seconds())) if newest else None
    return OverviewCounters(
        devices_total=status_counts["total"],
        devices_online=status_counts[DeviceStatus.ONLINE],
        devices_offline=status_counts[DeviceStatus.OFFLINE],
        devices_never_seen=status_counts[DeviceStatus.NEVER_SEEN],
        devices_inactive=status_counts[DeviceStatus.INACTIVE],
        alerts={severity.value: by_severity.get(severity.value, 0) for severity in Severity},
        readings_per_minute=readings,
        newest_reading=newest,
        ingest_lag_seconds=lag,
    )


def devices_needing_attention(*, scope: SiteScope, now: datetime.datetime, limit: int = 10) -> list[Device]:
    """Offline devices and devices with open alerts, most open alerts first, then longest silent."""
    open_alerts = (
        Alert.objects.filter(device_id=OuterRef("pk"), status__in=OPEN_STATUSES)
        .order_by()
        .values("device_id")
        .annotate(n=Count("id"))
        .values("n")
    )
    devices = devices_with_status(scope.devices, now=now).annotate(
        open_alerts=Coalesce(Subquery(open_alerts, output_field=IntegerField()), 0)
    )
    has_open_alerts = Exists(Alert.objects.filter(device_id=OuterRef("pk"), status__in=OPEN_STATUSES))
    return list(
        devices.filter(device_status_q(DeviceStatus.OFFLINE, now) | Q(has_open_alerts)).order_by(
            "-open_alerts", F("last_seen").asc(nulls_first=True), "name"
        )[:limit]
    )


# ---------------------------------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------------------------------


def device_tags(devices: QuerySet[Device]) -> list[str]:
    """Every tag used on the given devices, sorted (one statement over the tags array)."""
    tags = devices.order_by().annotate(tag=Func(F("tags"), function="unnest")).values_list("tag", flat=True)
    return sorted(set(tags))


@dataclass(frozen=True)
class LatestCell:
    key: str
    label: str
    unit: str
    value: float | None
    ts: datetime.datetime | None


def attach_key_latest_values(devices: list[Device]) -> None:
    """Set ``device.key_values`` to the latest value of the first three metrics of its type: two statements for a
    whole page of devices."""
    by_type = metric_definitions_by_type(device.device_type_id for device in devices)
    keys = {d.key for definitions in by_type.values() for d in definitions[:KEY_METRICS_PER_DEVICE]}
    latest = {
        (device_id, key): (value, ts)
        for device_id, key, value, ts in LatestValue.objects.filter(
            series__device_id__in=[device.id for device in devices], series__metric_key__in=keys
        ).values_list("series__device_id", "series__metric_key", "value", "ts")
    }
    for device in devices:
        device.key_values = [
            LatestCell(d.key, d.display_name, d.unit, *latest.get((device.id, d.key), (None, None)))
            for d in by_type.get(device.device_type_id, [])[:KEY_METRICS_PER_DEVICE]
        ]


def device_metrics(device: Device) -> list[LatestCell]:
    """Every metric of a device (defined by its type, or stored without a definition) with its latest value."""
    latest = {
        key: (value, ts)
        for key, value, ts in LatestValue.objects.filter(series__device_id=device.id).values_list(
            "series__metric_key", "value", "ts"
        )
    }
    cells = [
        LatestCell(d.key, d.display_name, d.unit, *latest.pop(d.key, (None, None)))
        for d in metric_definitions_by_type([device.device_type_id]).get(device.device_type_id, [])
    ]
    cells += [LatestCell(key, key, "", value, ts) for key, (value, ts) in sorted(latest.items())]
    return cells


# ---------------------------------------------------------------------------------------------------------------------
# Gateways: the edge agent's health, from the heartbeat readings of the gateway's own device
# ---------------------------------------------------------------------------------------------------------------------

# The edge agent (agent/, fieldwatch-agent) reports its health as readings of a device of its own: these are the
# metric keys of its heartbeat (agent/src/fieldwatch_agent/health.py, the wire contract; a test holds the two
# together). A device attached to a gateway that reports the first of them is that gateway's agent.
AGENT_HEARTBEAT_METRIC = "agent_buffer_depth"
AGENT_HEALTH_METRICS = (
    (AGENT_HEARTBEAT_METRIC, "Buffered", "readings"),
    ("agent_buffer_oldest_age_s", "Oldest unsent", "s"),
    ("agent_send_rate", "Send rate", "readings/s"),
    ("agent_poll_errors", "Poll errors", ""),
    ("agent_devices_failing", "Devices failing", ""),
    ("agent_buffer_dropped_total", "Dropped", "readings"),
)


@dataclass
class GatewayHealth:
    """A gateway as its page row shows it: its devices, the newest arrival from any of them, and its agent's
    heartbeat (``agent`` annotated with ``status_code``; None when no device of the gateway sends one)."""

    gateway: Gateway
    devices_total: int = 0
    devices_online: int = 0
    last_received: datetime.datetime | None = None
    agent: Device | None = None
    health: list[LatestCell] = field(default_factory=list)


def gateway_list_for_scope(scope: SiteScope) -> QuerySet[Gateway]:
    """The gateways of the shown sites (``gateway_list_for_user``), by site and name."""
    return gateway_list_for_user(user=scope.user).filter(site_id__in=scope.ids).order_by("site__name", "name", "id")


def gateway_health_list(gateways: list[Gateway], *, scope: SiteScope, now: datetime.datetime) -> list[GatewayHealth]:
    """Each gateway's devices, newest arrival and agent heartbeat: three statements for a whole page of gateways.

    The agent is the gateway's device that reports ``AGENT_HEARTBEAT_METRIC``; its status is the device status rule
    (``devices_with_status``), so a gateway whose heartbeats stop is offline after its device type's
    ``offline_after``. Should two devices of one gateway send heartbeats, the one heard from last is shown.
    """
    rows = {gateway.id: GatewayHealth(gateway) for gateway in gateways}
    devices = scope.devices.filter(gateway_id__in=rows)
    counts = (
        devices.order_by()
        .values("gateway_id")
        .annotate(
            total=Count("id"),
            online=Count("id", filter=device_status_q(DeviceStatus.ONLINE, now)),
            last_received=Max("last_seen"),
        )
    )
    for count in counts:
        row = rows[count["gateway_id"]]
        row.devices_total, row.devices_online = count["total"], count["online"]
        row.last_received = count["last_received"]
    agents = devices_with_status(devices.filter(series__metric_key=AGENT_HEARTBEAT_METRIC), now=now).order_by(
        F("last_seen").asc(nulls_first=True), "id"
    )
    for agent in agents:  # ascending: the device heard from last wins
        rows[agent.gateway_id].agent = agent
    agent_ids = [row.agent.id for row in rows.values() if row.agent is not None]
    latest = {
        (device_id, key): (value, ts)
        for device_id, key, value, ts in LatestValue.objects.filter(
            series__device_id__in=agent_ids, series__metric_key__in=[key for key, _, _ in AGENT_HEALTH_METRICS]
        ).values_list("series__device_id", "series__metric_key", "value", "ts")
    }
    for row in rows.values():
        if row.agent is not None:
            row.health = [
                LatestCell(key, label, unit, *latest.get((row.agent.id, key), (None, None)))
                for key, label, unit in AGENT_HEALTH_METRICS
            ]
    return list(rows.values())
