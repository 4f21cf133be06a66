"""Reads of sites, devices and gateways: the only way user-facing code reaches them, always scoped by the user.

Scope rules: superusers see everything; an organization admin sees all sites of the organization; operators and
viewers see the sites they were granted (django-guardian object permission ``devices.view_site``, per user or
through a group); a user without an organization sees nothing.
"""

import datetime

from django.db.models import Case, CharField, DateTimeField, ExpressionWrapper, F, Prefetch, Q, QuerySet, Value, When
from guardian.shortcuts import get_objects_for_user

from apps.devices.choices import DeviceStatus
from apps.devices.models import ApiKey, Device, DeviceType, DiscoveredDevice, Gateway, MetricDefinition, Site
from apps.users.choices import Role


def site_list_for_user(*, user) -> QuerySet[Site]:
    if not user.is_authenticated or not user.is_active:
        return Site.objects.none()
    if user.is_superuser:
        return Site.objects.all()
    if user.organization_id is None:
        return Site.objects.none()
    organization_sites = Site.objects.filter(organization_id=user.organization_id)
    if user.groups.filter(name=Role.ADMIN).exists():
        return organization_sites
    return get_objects_for_user(
        user, "devices.view_site", klass=organization_sites, accept_global_perms=False, with_superuser=False
    )


def site_ids_for_user(*, user) -> list[int]:
    return list(site_list_for_user(user=user).values_list("id", flat=True))


def user_can_operate_site(*, user, site: Site) -> bool:
    """Operators and admins of the site may acknowledge alerts and manage rules there; viewers may not."""
    if not site_list_for_user(user=user).filter(pk=site.pk).exists():
        return False
    if user.is_superuser or user.groups.filter(name=Role.ADMIN).exists():
        return True
    return user.has_perm("devices.operate_site", site)


def user_configures_organization(*, user) -> bool:
    """Creating, changing and deleting sites, device types, gateways, devices and keys is organization
    configuration: its admins and superusers only."""
    return user.is_superuser or (user.organization_id is not None and user.groups.filter(name=Role.ADMIN).exists())


def device_list_for_user(*, user) -> QuerySet[Device]:
    return Device.objects.filter(site__in=site_list_for_user(user=user)).select_related("site", "device_type")


def device_get_for_user(*, user, uid: str) -> Device | None:
    return device_list_for_user(user=user).filter(uid=uid).first()


def gateway_list_for_user(*, user) -> QuerySet[Gateway]:
    return Gateway.objects.filter(site__in=site_list_for_user(user=user)).select_related("site")


def device_type_list_for_user(*, user) -> QuerySet[DeviceType]:
    """Device types are organization-wide: every member reads them (viewers of one site too)."""
    if not user.is_authenticated or not user.is_active:
        return DeviceType.objects.none()
    if user.is_superuser:
        return DeviceType.objects.all()
    return DeviceType.objects.filter(organization_id=user.organization_id)


def api_key_list_for_user(*, user) -> QuerySet[ApiKey]:
    """Gateway API keys of the sites the user sees; only organization admins may act on them (see the API)."""
    return ApiKey.objects.filter(gateway__site__in=site_list_for_user(user=user)).select_related("gateway__site")


def user_manages_api_keys(*, user) -> bool:
    """Issuing, rotating and revoking gateway keys is organization configuration."""
    return user_configures_organization(user=user)


def device_type_with_metrics_list_for_user(*, user) -> QuerySet[DeviceType]:
    """The user's device types with their metric definitions (two statements for any number of types)."""
    metrics = Prefetch("metrics", queryset=MetricDefinition.objects.order_by("id"))
    return device_type_list_for_user(user=user).prefetch_related(metrics)


# ---------------------------------------------------------------------------------------------------------------------
# Device status in SQL: the rule of Device.status(), for filtering, counting and annotating a whole fleet at once
# ---------------------------------------------------------------------------------------------------------------------
def _online_since(now: datetime.datetime) -> ExpressionWrapper:
    """``now - device_type.offline_after``: a device seen at or after this instant is online (Device.status())."""
    return ExpressionWrapper(Value(now) - F("device_type__offline_after"), output_field=DateTimeField())


def device_status_q(status: str, now: datetime.datetime) -> Q:
    """The devices whose ``Device.status(now)`` is ``status``, as a filter."""
    if status == DeviceStatus.INACTIVE:
        return Q(is_active=False)
    if status == DeviceStatus.NEVER_SEEN:
        return Q(is_active=True, last_seen__isnull=True)
    if status == DeviceStatus.ONLINE:
        return Q(is_active=True, offline_since__isnull=True, last_seen__gte=_online_since(now))
    # Offline: silent for longer than the timeout, or it said so itself (a Sparkplug death) since it was last seen.
    return Q(is_active=True, last_seen__isnull=False) & (
        Q(last_seen__lt=_online_since(now)) | Q(offline_since__isnull=False)
    )


def devices_with_status(devices: QuerySet[Device], *, now: datetime.datetime) -> QuerySet[Device]:
    """Annotate ``status_code`` (a DeviceStatus value), the same rule as ``Device.status()``, in the query."""
    return devices.annotate(
        status_code=Case(
            *(When(device_status_q(status, now), then=Value(status.value)) for status in DeviceStatus),
            default=Value(DeviceStatus.OFFLINE.value),
            output_field=CharField(),
        )
    )


def discovered_device_list_for_user(*, user) -> QuerySet:
    """Discovered devices (``DiscoveredDevice``) of the user's organization, for its admins (and superusers: all);
    nothing for anyone else. Adopting one is organization configuration."""
    queryset = DiscoveredDevice.objects.select_related("site", "gateway", "adopted_device")
    if user.is_superuser:
        return queryset
    if not user_configures_organization(user=user):
        return queryset.none()
    return queryset.filter(site__organization_id=user.organization_id)


def metric_definitions_by_type(type_ids) -> dict[int, list[MetricDefinition]]:
    """Metric definitions per device type in the order they were defined (the type's own order of importance), in
    one statement for any number of types. Not scoped: the caller passes types of devices it has scoped."""
    by_type: dict[int, list[MetricDefinition]] = {}
    for definition in MetricDefinition.objects.filter(device_type_id__in=set(type_ids)).order_by("device_type", "id"):
        by_type.setdefault(definition.device_type_id, []).append(definition)
    return by_type
