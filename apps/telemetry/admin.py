"""Read-only views of telemetry: series with their latest values and recent readings, and the dead letters.

Ingest owns these tables, so nothing here adds or edits rows. Deleting a series is not offered either: readings
have no database foreign key to it, so a deleted series would leave its readings behind; a device's whole history
goes through the "purge" action on devices (``device_purge``).

``Reading`` has no ModelAdmin of its own: its primary key is a ``CompositePrimaryKey`` (series, ts), and Django
5.2's ``AdminSite.register`` refuses such models ("has a composite primary key, so it cannot be registered with
admin", ImproperlyConfigured at import). The last readings of a series are shown on the series page instead.
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.formats import localize
from django.utils.html import format_html, format_html_join

from apps.core.admin_mixins import OrganizationScopedAdminMixin, ReadOnlyAdminMixin
from apps.devices.models import DeviceType, DiscoveredDevice
from apps.devices.selectors import user_configures_organization
from apps.devices.services import discovered_device_adopt
from apps.telemetry.models import DeadLetter, LatestValue, Reading, Series
from apps.telemetry.replay import REPLAY_MAX_LETTERS, adopted_devices_replay, dead_letters_replay
from apps.telemetry.selectors import dead_letters_scope

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


def _payload_as_text(payload: bytes) -> str:
    """A received payload for reading: as text, or as hex when it is binary (MessagePack, CBOR, protobuf)."""
    try:
        return payload.decode()
    except UnicodeDecodeError:
        return f"(binary, e.g. MessagePack; hex) {payload.hex(' ')}"


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdminMixin, OrganizationScopedAdminMixin, admin.ModelAdmin):
    """Refused input, for diagnosis and replay. Platform operators may delete it; nobody edits it."""

    list_display = ("received_at", "source", "reason", "device_uid", "origin", "payload_size", "replay_result")
    list_filter = ("reason", "source", "replay_result")
    search_fields = ("device_uid", "origin", "detail")
    date_hierarchy = "received_at"
    fields = (
        "received_at",
        "source",
        "reason",
        "detail",
        "device_uid",
        "origin",
        "site",
        "payload_size",
        "payload_text",
        "replayed_at",
        "replay_result",
        "replay_detail",
    )
    readonly_fields = fields
    actions = ["replay"]

    def scope_queryset(self, queryset, organization_id):
        return dead_letters_scope(queryset, organization_id)

    def has_replay_permission(self, request):
        return user_configures_organization(user=request.user)

    @admin.action(description="Replay the selected dead letters through ingest", permissions=["replay"])
    def replay(self, request, queryset):
        summary = dead_letters_replay(letters=queryset)
        counts = ", ".join(f"{count} {result}" for result, count in sorted(summary.results.items()))
        more = (
            f" (the oldest {REPLAY_MAX_LETTERS}; replay again for the rest)"
            if queryset.count() > summary.letters
            else ""
        )
        self.message_user(
            request, f"Replayed {summary.letters} letters{more} as {summary.messages} messages: {counts}."
        )

    def get_queryset(self, request):
        # The payload (up to INGEST_DEAD_LETTER_PAYLOAD_BYTES a row) is needed only on the detail page, where the
        # deferred load costs one query.
        return super().get_queryset(request).defer("payload")

    def has_delete_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    @admin.display(description="payload")
    def payload_text(self, dead_letter):
        payload = bytes(dead_letter.payload or b"")
        text = _payload_as_text(payload)
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


class AdoptForm(forms.Form):
    device_type = forms.ModelChoiceField(queryset=DeviceType.objects.none(), help_text="What the devices are.")
    replay = forms.BooleanField(
        required=False, initial=True, help_text="Replay their dead-lettered readings into the new series."
    )


@admin.register(DiscoveredDevice)
class DiscoveredDeviceAdmin(ReadOnlyAdminMixin, OrganizationScopedAdminMixin, admin.ModelAdmin):
    """Devices gateways sent readings for while unregistered (the ``discover`` policy): adopt them with a type,
    and replay what they sent. Kept after adoption, marked with the device."""

    organization_path = "site__organization"
    list_display = ("uid", "site", "gateway", "first_seen", "last_seen", "message_count", "metrics", "adopted_device")
    list_filter = (("site", admin.RelatedOnlyFieldListFilter), ("adopted_device", admin.EmptyFieldListFilter))
    list_select_related = ("site", "gateway", "adopted_device")
    search_fields = ("uid",)
    fields = (
        "uid",
        "site",
        "gateway",
        "first_seen",
        "last_seen",
        "message_count",
        "metric_keys",
        "sample",
        "adopted_device",
        "adopted_at",
    )
    readonly_fields = fields
    actions = ["adopt"]

    def has_delete_permission(self, request, obj=None):
        # Django's permission (cached on the user): asked for every page's app list, where a query would add up.
        return request.user.has_perm("devices.delete_discovereddevice")

    def has_adopt_permission(self, request):
        return user_configures_organization(user=request.user)

    @admin.display(description="metrics")
    def metrics(self, discovered):
        return ", ".join(discovered.metric_keys) or "—"

    @admin.display(description="sample payload")
    def sample(self, discovered):
        text = _payload_as_text(bytes(discovered.sample_payload or b""))[:PAYLOAD_SHOWN_CHARS]
        return format_html('<pre style="white-space: pre-wrap; word-break: break-all;">{}</pre>', text)

    @admin.action(description="Adopt: register the selected devices with a type", permissions=["adopt"])
    def adopt(self, request, queryset):
        discovered = list(queryset.filter(adopted_device__isnull=True).select_related("site", "gateway"))
        organizations = {item.site.organization_id for item in discovered}
        if not discovered:
            self.message_user(request, "The selected devices are adopted already.", messages.WARNING)
            return None
        if len(organizations) > 1:
            self.message_user(request, "Adopt devices of one organization at a time.", messages.ERROR)
            return None
        form = AdoptForm(request.POST if "apply" in request.POST else None)
        form.fields["device_type"].queryset = DeviceType.objects.filter(organization_id__in=organizations)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "title": "Adopt discovered devices",
                "opts": self.model._meta,
                "discovered": discovered,
                "form": form,
            }
            return TemplateResponse(request, "admin/telemetry/adopt.html", context)
        adopted, problems = [], []
        for item in discovered:
            try:
                adopted.append(
                    discovered_device_adopt(
                        user=request.user, discovered=item, device_type=form.cleaned_data["device_type"]
                    )
                )
            except (ValidationError, PermissionDenied) as error:
                problems.append(f"{item.uid}: {'; '.join(getattr(error, 'messages', [str(error)]))}")
        message = f"Adopted {len(adopted)} device{'s' if len(adopted) != 1 else ''}."
        if adopted and form.cleaned_data["replay"]:
            summary = adopted_devices_replay(devices=adopted)
            message += f" Replayed {summary.letters} dead letters: {summary.results.get('stored', 0)} stored."
        self.message_user(request, message)
        for problem in problems:
            self.message_user(request, problem, messages.ERROR)
        return None
