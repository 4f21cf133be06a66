"""The filters of dead letters (one FilterSet, django-filter): what the API lists and what a replay selects, so the
query string of a list and the body of a replay mean the same letters."""

import django_filters

from apps.devices.filters import InstantFilter, SiteFilter
from apps.telemetry.choices import RejectReason, ReplayResult
from apps.telemetry.models import DeadLetter


class DeadLetterFilterSet(django_filters.FilterSet):
    """By device uid, reason, the sender's site, arrival range and replay result (``none``: never replayed)."""

    device = django_filters.CharFilter(label="Device", field_name="device_uid", max_length=128, help_text="Device id")
    reason = django_filters.MultipleChoiceFilter(label="Reason", choices=RejectReason.choices)
    site = SiteFilter(field_name="site")
    received_after = InstantFilter(
        label="Received since", field_name="received_at", lookup_expr="gte", help_text="ISO-8601; inclusive"
    )
    received_before = InstantFilter(
        label="Received before", field_name="received_at", lookup_expr="lt", help_text="ISO-8601; exclusive"
    )
    replay_result = django_filters.ChoiceFilter(
        label="Replay result",
        choices=[*ReplayResult.choices, ("none", "Never replayed")],
        method="filter_replay_result",
    )

    class Meta:
        model = DeadLetter
        fields = ["device", "reason", "site", "received_after", "received_before", "replay_result"]

    def filter_replay_result(self, queryset, name, value):
        return queryset.filter(replay_result="" if value == "none" else value)
