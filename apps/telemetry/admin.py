"""Read-only views of telemetry: series with their latest values and recent readings, and the dead letters.

Ingest owns these tables, so nothing here adds or edits rows. Deleting a series is not offered either: readings
have no database foreign key to it, so a deleted series would leave its readings behind; a device's whole history
goes through the "purge" action on devices (``device_purge``).

``Reading`` has no ModelAdmin of its own: its primary key is a ``CompositePrimaryKey`` (series, ts), and Django
5.2's ``AdminSite.register`` refuses such models ("has a composite primary key, so it cannot be registered with
admin", ImproperlyConfigured at import). The last readings of a series are shown on the series page instead.
"""

from django.contrib import admin
from django.utils import timezone
from django.utils.formats import localize
from django.utils.html import format_html, format_html_join

from apps.core.admin_mixins import OrganizationScopedAdminMixin, ReadOnlyAdminMixin
from apps.devices.models import Device
from apps.telemetry.models import DeadLetter, LatestValue, Reading, Series

RECENT_READINGS_SHOWN = 50
PAYLOAD_SHOWN_CHARS = 2000


def _timestamp(value):
    return localize(timezone.localtime(value)) if value else "—"


@admin.register(Series)
class SeriesAdmin(ReadOnlyAdminMixin, OrganizationScopedAdminMixin, admin.ModelAdmin):
    organization_path = "device__site__organization"
    list_display = ("device_uid", "metric_key", "latest_value", "latest_ts", "created_at")
    list_filter = (
        ("device__site", admin.RelatedOnlyFieldListFilter),
        ("device__device_type", admin.RelatedOnlyFieldListFilter),
    )
    # "latest" is the reverse one-to-one to LatestValue: joined, so a series without one costs no query either.
    list_select_related = ("device", "latest")
    search_fields = ("device__uid", "device__name", "metric_key")
    fields = ("device", "metric_key", "created_at", "latest_value", "latest_ts", "recent_readings")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("device", "latest")

    @admin.display(description="device id", ordering="device__uid")
    def device_uid(self, series):
        return series.device.uid

    @admin.display(description="latest value", ordering="latest__value")
    def latest_value(self, series):
        latest = getattr(series, "latest", None)
        return latest.value if latest else "—"

    @admin.display(description="latest at", ordering="latest__ts")
    def latest_ts(self, series):
        latest = getattr(series, "latest", None)
        return _timestamp(latest.ts) if latest else "—"

    @admin.display(description=f"last {RECENT_READINGS_SHOWN} readings")
    def recent_readings(self, series):
        # One query, served backwards by the (series, ts) primary key index.
        readings = Reading.objects.filter(series_id=series.pk).order_by("-ts")[:RECENT_READINGS_SHOWN]
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", ((_timestamp(r.ts), r.value) for r in readings))
        if not rows:
            return "No readings."
        return format_html("<table><thead><tr><th>time</th><th>value</th></tr></thead><tbody>{}</tbody></table>", rows)


@admin.register(LatestValue)
class LatestValueAdmin(ReadOnlyAdminMixin, OrganizationScopedAdminMixin, admin.ModelAdmin):
    organization_path = "series__device__site__organization"
    list_display = ("device_uid", "metric_key", "value", "ts")
    list_filter = (("series__device__site", admin.RelatedOnlyFieldListFilter),)
    list_select_related = ("series__device",)
    search_fields = ("series__device__uid", "series__metric_key")
    fields = ("series", "value", "ts")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("series__device")

    @admin.display(description="device id", ordering="series__device__uid")
    def device_uid(self, latest):
        return latest.series.device.uid

    @admin.display(description="metric", ordering="series__metric_key")
    def metric_key(self, latest):
        return latest.series.metric_key


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdminMixin, OrganizationScopedAdminMixin, admin.ModelAdmin):
    """Refused input, for diagnosis. Platform operators may delete it; nobody edits it."""

    list_display = ("received_at", "source", "reason", "device_uid", "origin", "payload_size")
    list_filter = ("reason", "source")
    search_fields = ("device_uid", "origin", "detail")
    date_hierarchy = "received_at"
    fields = ("received_at", "source", "reason", "detail", "device_uid", "origin", "payload_size", "payload_text")
    readonly_fields = fields

    def scope_queryset(self, queryset, organization_id):
        # A dead letter has no foreign key (it may name a device that does not exist): an organization sees those
        # naming one of its devices; the rest (unknown devices, unparseable input) only platform operators see.
        return queryset.filter(device_uid__in=Device.objects.filter(site__organization=organization_id).values("uid"))

    def get_queryset(self, request):
        # The payload (up to INGEST_DEAD_LETTER_PAYLOAD_BYTES a row) is needed only on the detail page, where the
        # deferred load costs one query.
        return super().get_queryset(request).defer("payload")

    def has_delete_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    @admin.display(description="payload")
    def payload_text(self, dead_letter):
        payload = bytes(dead_letter.payload or b"")
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            text = f"(binary, e.g. MessagePack; hex) {payload.hex(' ')}"
        notes = []
        if len(text) > PAYLOAD_SHOWN_CHARS:
            text = text[:PAYLOAD_SHOWN_CHARS]
            notes.append(f"shown truncated to {PAYLOAD_SHOWN_CHARS} characters")
        if len(payload) < dead_letter.payload_size:
            notes.append(f"stored truncated to {len(payload)} of {dead_letter.payload_size} bytes")
        # format_html escapes the payload: it is untrusted input.
        return format_html(
            '<pre style="white-space: pre-wrap; word-break: break-all;">{}</pre>{}',
            text,
            f"({'; '.join(notes)})" if notes else "",
        )
