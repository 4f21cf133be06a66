"""Reads of sites, devices and gateways: the only way user-facing code reaches them, always scoped by the user.

Scope rules: superusers see everything; an organization admin sees all sites of the organization; operators and
viewers see the sites they were granted (django-guardian object permission ``devices.view_site``, per user or
through a group); a user without an organization sees nothing.
"""

from django.db.models import QuerySet
from guardian.shortcuts import get_objects_for_user

from apps.devices.models import ApiKey, Device, DeviceType, Gateway, Site
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


def device_list_for_user(*, user) -> QuerySet[Device]:
    return Device.objects.filter(site__in=site_list_for_user(user=user)).select_related("site", "device_type")


def device_get_for_user(*, user, uid: str) -> Device | None:
    return device_list_for_user(user=user).filter(uid=uid).first()


def gateway_list_for_user(*, user) -> QuerySet[Gateway]:
    return Gateway.objects.filter(site__in=site_list_for_user(user=user)).select_related("site")


def device_type_list_for_user(*, user) -> QuerySet[DeviceType]:
    if not user.is_authenticated:
        return DeviceType.objects.none()
    if user.is_superuser:
        return DeviceType.objects.all()
    return DeviceType.objects.filter(organization_id=user.organization_id)


def api_key_list_for_user(*, user) -> QuerySet[ApiKey]:
    """Gateway API keys of the sites the user sees; only organization admins may act on them (see the API)."""
    return ApiKey.objects.filter(gateway__site__in=site_list_for_user(user=user)).select_related("gateway__site")


def user_manages_api_keys(*, user) -> bool:
    """Issuing, rotating and revoking gateway keys is organization configuration: admins and superusers only."""
    return user.is_superuser or (user.organization_id is not None and user.groups.filter(name=Role.ADMIN).exists())
