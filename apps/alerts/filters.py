"""The alert list's filters, defined once (django-filter) for the REST API and the dashboard's alert pages."""

import django_filters

from apps.alerts.choices import OPEN_STATUSES, AlertStatus, Severity
from apps.alerts.models import Alert, AlertRule
from apps.alerts.selectors import alert_rule_list_for_user
from apps.devices.filters import InstantFilter, ScopedModelChoiceFilter, SiteFilter

OPEN = "open"  # active or acknowledged: what still needs someone


class AlertFilterSet(django_filters.FilterSet):
    """Status (``open``: active or acknowledged), severity, site, device, rule and the time it opened."""

    status = django_filters.ChoiceFilter(
        label="Status", choices=[(OPEN, "Open"), *AlertStatus.choices], method="filter_status", empty_label="Any status"
    )
    severity = django_filters.ChoiceFilter(label="Severity", choices=Severity.choices, empty_label="Any severity")
    site = SiteFilter(field_name="device__site")
    device = django_filters.CharFilter(label="Device id", field_name="device__uid", max_length=128)
    rule = ScopedModelChoiceFilter(
        label="Rule", scope=alert_rule_list_for_user, model=AlertRule, empty_label="Any rule", help_text="Rule id"
    )
    opened_after = InstantFilter(
        label="Opened since", field_name="opened_at", lookup_expr="gte", help_text="ISO-8601; inclusive"
    )
    opened_before = InstantFilter(
        label="Opened before", field_name="opened_at", lookup_expr="lt", help_text="ISO-8601; exclusive"
    )

    class Meta:
        model = Alert
        fields = ["status", "severity", "site", "device", "rule", "opened_after", "opened_before"]

    def filter_status(self, queryset, name, value):
        if value == OPEN:
            return queryset.filter(status__in=OPEN_STATUSES)
        return queryset.filter(status=value)
