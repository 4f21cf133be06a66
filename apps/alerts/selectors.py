"""Reads of alerts and alert rules for a user, scoped by the sites the user may see (apps.devices.selectors)."""

from django.db.models import Prefetch, Q, QuerySet

from apps.alerts.models import Alert, AlertEvent, AlertRule
from apps.devices.selectors import site_list_for_user


def alert_list_for_user(*, user) -> QuerySet[Alert]:
    """Alerts of devices on the user's sites, newest first; narrowed by ``apps.alerts.filters.AlertFilterSet``."""
    alerts = Alert.objects.filter(device__site__in=site_list_for_user(user=user)).select_related(
        "rule", "device", "device__site", "acknowledged_by", "resolved_by"
    )
    return alerts.order_by("-opened_at", "-id")


def alert_get_for_user(*, user, alert_id: int) -> Alert | None:
    """One alert with its history, or None when it does not exist or is on a site the user may not see."""
    events = AlertEvent.objects.select_related("actor").order_by("at", "id")
    return (
        alert_list_for_user(user=user).prefetch_related(Prefetch("events", queryset=events)).filter(pk=alert_id).first()
    )


def alert_rule_list_for_user(*, user) -> QuerySet[AlertRule]:
    """Rules scoped to the user's sites: site-scoped on one of them, or device-scoped on a device of one."""
    sites = site_list_for_user(user=user)
    return (
        AlertRule.objects.filter(Q(site__in=sites) | Q(device__site__in=sites))
        .select_related("site", "device", "device_type", "escalation_policy")
        .order_by("name", "id")
    )
