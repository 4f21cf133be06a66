"""The configuration UI for sites, device types, gateways, devices and API keys.

Admin actions are interfaces: they call the services (``api_key_issue``, ``api_key_revoke``, ``device_purge``)
and report. Every admin is scoped to the user's organization by ``OrganizationScopedAdminMixin``; related list
filters are ``RelatedOnlyFieldListFilter`` so they never list another organization's names.
"""

import functools
import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import F, Func, Q
from django.db.models.fields import CharField
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from apps.core.admin_mixins import (
    CredentialStateFilter,
    OrganizationScopedAdminMixin,
    ReadOnlyAdminMixin,
    count_column,
    related_count,
    subquery_count,
)
from apps.core.time import timezone_names
from apps.devices import imports
from apps.devices.broker_auth import mqtt_credential_issue, mqtt_credential_revoke
from apps.devices.key_rotation import KeyNotRotatable, api_key_rotate
from apps.devices.models import (
    AccessToken,
    ApiKey,
    Device,
    DeviceType,
    Gateway,
    MetricDefinition,
    MqttCredential,
    Site,
)
from apps.devices.services import (
    RegistryConflict,
    access_token_issue,
    access_token_revoke,
    api_key_issue,
    api_key_revoke,
    device_purge,
)

RelatedOnly = admin.RelatedOnlyFieldListFilter


def _key_label(api_key: ApiKey | None) -> str:
    """How a key is named everywhere in the UI: its public prefix, never anything derived from the secret."""
    return f"fwk_{api_key.prefix}…" if api_key else "—"


def _announce_plaintext(request, api_key: ApiKey, plaintext: str) -> None:
    # The one moment the plaintext exists outside the gateway: it goes to the user in a message, never to a column.
    messages.warning(
        request,
        format_html(
            "New API key for gateway {}: <code>{}</code> — copy it now, it is not stored and will not be shown again.",
            api_key.gateway,
            plaintext,
        ),
    )


class MqttCredentialIssueMixin:
    """Adds "Issue broker (MQTT) credentials" to the device and gateway lists; set ``mqtt_owner_kind``."""

    mqtt_owner_kind: str

    def has_issue_mqtt_credentials_permission(self, request):
        return request.user.has_perm("devices.add_mqttcredential")

    @admin.action(description="Issue broker (MQTT) credentials", permissions=["issue_mqtt_credentials"])
    def issue_mqtt_credentials(self, request, queryset):
        """Issue (or replace) each selected owner's broker login; each password is shown once, here."""
        for owner in queryset:
            try:
                credential, password = mqtt_credential_issue(**{self.mqtt_owner_kind: owner})
            except ValueError as error:
                self.message_user(request, str(error), messages.ERROR)
                continue
            messages.warning(
                request,
                format_html(
                    "Broker login for {}: username <code>{}</code>, password <code>{}</code> — copy it now, it is "
                    "not stored and will not be shown again. The broker admits it within seconds.",
                    owner,
                    credential.username,
                    password,
                ),
            )


class AccessTokenIssueMixin:
    """Adds "Issue ThingsBoard access token" to the device and gateway lists (uses ``mqtt_owner_kind``)."""

    def has_issue_access_tokens_permission(self, request):
        return request.user.has_perm("devices.add_accesstoken")

    @admin.action(description="Issue ThingsBoard access token", permissions=["issue_access_tokens"])
    def issue_access_tokens(self, request, queryset):
        """Issue (or rotate) each selected owner's access token; each is shown once, here."""
        for owner in queryset:
            _, plaintext = access_token_issue(**{self.mqtt_owner_kind: owner})
            messages.warning(
                request,
                format_html(
                    "Access token for {}: <code>{}</code> — copy it now, it is not stored and will not be shown "
                    "again. ThingsBoard firmware uses it as its MQTT username (no password) or in "
                    "<code>/api/v1/&lt;token&gt;/telemetry</code>; the broker admits it within seconds.",
                    owner,
                    plaintext,
                ),
            )


# ---------------------------------------------------------------------------------------------------------------------
# Sites
# ---------------------------------------------------------------------------------------------------------------------
@functools.cache
def _timezone_names() -> tuple[str, ...]:
    return tuple(sorted(timezone_names()))  # what validate_timezone accepts, no more


class TimezoneInput(forms.TextInput):
    """A text box that suggests IANA timezone names (an HTML datalist) while typing.

    A text box rather than a select, so a wrong name is rejected by the model's ``validate_timezone`` with its
    message naming examples, rather than by a generic "Select a valid choice".
    """

    datalist_id = "iana-timezones"

    def __init__(self, attrs=None):
        super().__init__({"list": self.datalist_id, "autocomplete": "off", **(attrs or {})})

    def render(self, name, value, attrs=None, renderer=None):
        options = format_html_join("", '<option value="{}">', ((tz,) for tz in _timezone_names()))
        return format_html(
            '{}<datalist id="{}">{}</datalist>', super().render(name, value, attrs, renderer), self.datalist_id, options
        )


class SiteForm(forms.ModelForm):
    class Meta:
        model = Site
        fields = (
            "organization",
            "name",
            "timezone",
            "address",
            "latitude",
            "longitude",
            "emission_factor_kg_per_kwh",
            "tariff_currency",
            "tariff_flat_price",
            "tariff_bands",
        )
        widgets = {"timezone": TimezoneInput}


class GatewayInline(admin.TabularInline):
    model = Gateway
    fields = ("uid", "name", "created_at")
    readonly_fields = ("created_at",)
    extra = 0
    show_change_link = True


@admin.register(Site)
class SiteAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    organization_path = "organization"
    form = SiteForm
    list_display = ("name", "organization", "timezone", "device_count", "gateway_count", "created_at")
    list_filter = (("organization", RelatedOnly), "timezone")
    list_select_related = ("organization",)
    search_fields = ("name", "address")
    fields = (
        "organization",
        "name",
        "timezone",
        "address",
        ("latitude", "longitude"),
        "emission_factor_kg_per_kwh",
        "discovery_policy",
        ("tariff_currency", "tariff_flat_price"),
        "tariff_bands",
        "created_at",
    )
    readonly_fields = ("created_at",)
    inlines = [GatewayInline]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                device_count=subquery_count(Device.objects.all(), field="site"),
                gateway_count=subquery_count(Gateway.objects.all(), field="site"),
            )
        )

    device_count = count_column("device_count", "devices")
    gateway_count = count_column("gateway_count", "gateways")


# ---------------------------------------------------------------------------------------------------------------------
# Device types
# ---------------------------------------------------------------------------------------------------------------------
class MetricDefinitionInline(admin.TabularInline):
    model = MetricDefinition
    fields = ("key", "display_name", "unit", "kind", "min_value", "max_value", "role", "precision")
    extra = 0


@admin.register(DeviceType)
class DeviceTypeAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    organization_path = "organization"
    list_display = ("name", "organization", "unknown_metric_policy", "offline_after", "metric_count", "device_count")
    list_filter = (("organization", RelatedOnly), "unknown_metric_policy")
    list_select_related = ("organization",)
    search_fields = ("name", "description")
    fields = (
        "organization",
        "name",
        "description",
        "unknown_metric_policy",
        "offline_after",
        "raw_retention_days",
        "payload_schema",
    )
    inlines = [MetricDefinitionInline]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                metric_count=subquery_count(MetricDefinition.objects.all(), field="device_type"),
                device_count=subquery_count(Device.objects.all(), field="device_type"),
            )
        )

    metric_count = count_column("metric_count", "metrics")
    device_count = count_column("device_count", "devices")


# ---------------------------------------------------------------------------------------------------------------------
# Gateways and API keys
# ---------------------------------------------------------------------------------------------------------------------
class ApiKeyInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The gateway's keys, read-only: keys are issued and revoked through actions that call the services."""

    model = ApiKey
    fk_name = "gateway"
    fields = ("key", "name", "created_at", "expires_at", "last_used_at", "revoked_at", "replaces_key")
    readonly_fields = fields
    extra = 0
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("replaces")

    @admin.display(description="key")
    def key(self, api_key):
        return _key_label(api_key)

    @admin.display(description="replaces")
    def replaces_key(self, api_key):
        return _key_label(api_key.replaces)


@admin.register(Gateway)
class GatewayAdmin(MqttCredentialIssueMixin, AccessTokenIssueMixin, OrganizationScopedAdminMixin, admin.ModelAdmin):
    mqtt_owner_kind = "gateway"
    organization_path = "site__organization"
    list_display = ("name", "uid", "site", "device_count", "usable_key_count", "created_at")
    list_filter = (("site", RelatedOnly),)
    list_select_related = ("site",)
    search_fields = ("uid", "name")
    fieldsets = (
        (None, {"fields": ("site", "uid", "name", "created_at")}),
        ("InfluxDB line protocol (Telegraf)", {"fields": Gateway.DIALECT_OPTION_FIELDS}),
        (
            "Unknown devices",
            {
                "fields": ("discovery_policy", "auto_register_type"),
                "description": "Auto-register needs the organization's discovery_auto_register flag; without it, "
                "or without a type, unknown devices are discovered.",
            },
        ),
    )
    readonly_fields = ("created_at",)
    inlines = [ApiKeyInline]
    actions = ["issue_api_key", "issue_mqtt_credentials", "issue_access_tokens"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                device_count=subquery_count(Device.objects.all(), field="gateway"),
                usable_key_count=subquery_count(ApiKey.objects.usable(), field="gateway"),
            )
        )

    device_count = count_column("device_count", "devices")

    @admin.display(description="usable API keys", ordering="usable_key_count")
    def usable_key_count(self, gateway):
        return gateway.usable_key_count

    def has_issue_api_key_permission(self, request):
        return request.user.has_perm("devices.add_apikey")

    @admin.action(description="Issue a new API key", permissions=["issue_api_key"])
    def issue_api_key(self, request, queryset):
        for gateway in queryset:
            api_key, plaintext = api_key_issue(gateway=gateway, name=f"Issued in the admin by {request.user}")
            _announce_plaintext(request, api_key, plaintext)


class ApiKeyIssueForm(forms.ModelForm):
    """What a person chooses when issuing a key; the prefix and hash come from ``api_key_issue``, never a form."""

    class Meta:
        model = ApiKey
        fields = ("gateway", "name", "expires_at")

    def clean_expires_at(self):
        expires_at = self.cleaned_data["expires_at"]
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError(
                "The expiry must be in the future (leave it empty for a key that never expires)."
            )
        return expires_at


@admin.register(ApiKey)
class ApiKeyAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    organization_path = "gateway__site__organization"
    list_display = (
        "key",
        "gateway",
        "name",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
        "replaced_by_key",
    )
    list_filter = (CredentialStateFilter, ("gateway__site", RelatedOnly), ("gateway", RelatedOnly))
    list_select_related = ("gateway", "replaced_by")
    search_fields = ("prefix", "name", "gateway__uid", "gateway__name")
    readonly_fields = ("key", "created_at", "last_used_at", "revoked_at", "replaces_key", "replaced_by_key")
    actions = ["revoke_keys", "rotate_keys"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("gateway", "replaces", "replaced_by")

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyIssueForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("gateway", "name", "expires_at")
        return (
            "key",
            "gateway",
            "name",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
            "replaces_key",
            "replaced_by_key",
        )

    def get_readonly_fields(self, request, obj=None):
        # The gateway of an issued key never changes: a key for another gateway is a new key.
        return (*self.readonly_fields, "gateway") if obj else ()

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        api_key, plaintext = api_key_issue(gateway=obj.gateway, name=obj.name, expires_at=obj.expires_at)
        # The admin goes on to log the addition and redirect using ``obj``: make it the row the service created.
        obj.pk = api_key.pk
        obj.refresh_from_db()
        obj._state.adding = False
        _announce_plaintext(request, api_key, plaintext)
        return None

    @admin.display(description="key", ordering="prefix")
    def key(self, api_key):
        return _key_label(api_key)

    @admin.display(description="replaces")
    def replaces_key(self, api_key):
        return _key_label(api_key.replaces)

    @admin.display(description="replaced by")
    def replaced_by_key(self, api_key):
        return _key_label(getattr(api_key, "replaced_by", None))

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        revoked = [api_key for api_key in queryset if api_key_revoke(api_key=api_key)]
        if revoked:
            labels = ", ".join(_key_label(api_key) for api_key in revoked)
            self.message_user(request, f"Revoked {len(revoked)} key(s): {labels}.", messages.SUCCESS)
        if skipped := queryset.count() - len(revoked):
            self.message_user(request, f"{skipped} key(s) were already revoked; left unchanged.", messages.INFO)

    def has_rotate_keys_permission(self, request):
        return request.user.has_perm("devices.add_apikey")

    @admin.action(description="Rotate selected keys (issue replacements)", permissions=["rotate_keys"])
    def rotate_keys(self, request, queryset):
        """Issue a successor for each key; the old one works for the grace period, so a gateway can switch over."""
        for old_key in queryset.filter(replaced_by__isnull=True):
            try:
                api_key, plaintext = api_key_rotate(api_key=old_key)
            except KeyNotRotatable as error:
                self.message_user(request, str(error), messages.WARNING)
                continue
            _announce_plaintext(request, api_key, plaintext)
        if already := queryset.filter(replaced_by__isnull=False).count():
            self.message_user(request, f"{already} key(s) already have a replacement; skipped.", messages.INFO)


# ---------------------------------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------------------------------
class TagListFilter(admin.SimpleListFilter):
    """Filter by one tag; the choices are the tags in use on the devices this user can see (one query)."""

    title = "tag"
    parameter_name = "tag"
    max_choices = 200

    def lookups(self, request, model_admin):
        tags = (
            model_admin.get_queryset(request)
            .annotate(tag=Func(F("tags"), function="unnest", output_field=CharField()))
            .values_list("tag", flat=True)
            .order_by("tag")
            .distinct()[: self.max_choices]
        )
        return [(tag, tag) for tag in tags]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(tags__contains=[self.value()])
        return queryset


IMPORT_PREVIEW_ROWS = 200


class DeviceImportForm(forms.Form):
    file = forms.FileField(help_text=f"CSV or JSON, at most {imports.MAX_IMPORT_ROWS} devices.")
    mode = forms.ChoiceField(choices=imports.ImportMode.choices, initial=imports.ImportMode.CREATE)


def _import_content(request, form) -> tuple[str, str]:
    """The file's text and the mode: from the upload, or from the preview's confirmation."""
    if "confirm" in request.POST:
        return request.POST.get("content", ""), request.POST.get("mode", imports.ImportMode.CREATE)
    raw = form.cleaned_data["file"].read()
    try:
        return raw.decode("utf-8-sig"), form.cleaned_data["mode"]
    except UnicodeDecodeError:
        return "\x00", form.cleaned_data["mode"]  # read as not a text file


def _import_rows(content: str) -> list[dict]:
    if content.lstrip().startswith(("[", "{")):
        try:
            return imports.rows_from_json(json.loads(content))
        except ValueError as error:
            if isinstance(error, imports.ImportFileError):
                raise
            raise imports.ImportFileError(f"Not valid JSON: {error}.") from None
    return imports.rows_from_csv(content)


@admin.register(Device)
class DeviceAdmin(MqttCredentialIssueMixin, AccessTokenIssueMixin, OrganizationScopedAdminMixin, admin.ModelAdmin):
    mqtt_owner_kind = "device"
    organization_path = "site__organization"
    list_display = ("uid", "name", "site", "device_type", "status", "last_seen", "series_count", "is_active")
    list_filter = (("site", RelatedOnly), ("device_type", RelatedOnly), "is_active", TagListFilter)
    list_select_related = ("site", "device_type")
    search_fields = ("uid", "name")
    fields = (
        "uid",
        "name",
        "site",
        "device_type",
        "gateway",
        "tags",
        "metadata",
        "is_active",
        "status",
        "last_seen",
        "series_count",
        "created_at",
    )
    readonly_fields = ("status", "last_seen", "series_count", "created_at")
    actions = ["purge_devices", "issue_mqtt_credentials", "issue_access_tokens"]
    change_list_template = "admin/devices/device/change_list.html"

    def get_urls(self):
        view = self.admin_site.admin_view(self.import_view)
        return [path("import/", view, name="devices_device_import"), *super().get_urls()]

    def import_view(self, request):
        """Upload a CSV or JSON fleet, preview what it changes, confirm: ``apps.devices.imports``, as the API's
        ``POST /api/v1/devices/import``. The confirmation posts the file's text back and it is planned again, so
        what is written is checked against the registry as it is at that moment."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Import devices",
            "opts": self.model._meta,
            "columns": imports.IMPORT_COLUMNS,
            "form": DeviceImportForm(),
            "shown": IMPORT_PREVIEW_ROWS,
        }
        if request.method != "POST":
            return TemplateResponse(request, "admin/devices/device/import.html", context)
        form = DeviceImportForm(request.POST, request.FILES)
        if "confirm" not in request.POST and not form.is_valid():
            return TemplateResponse(request, "admin/devices/device/import.html", {**context, "form": form})
        content, mode = _import_content(request, form)
        try:
            plan = imports.device_import_plan(user=request.user, rows=_import_rows(content), mode=mode)
        except imports.ImportFileError as error:
            form.add_error(None, str(error))
            return TemplateResponse(request, "admin/devices/device/import.html", {**context, "form": form})
        if "confirm" in request.POST and not plan.errors:
            try:
                summary = imports.device_import_apply(plan=plan)
            except RegistryConflict as error:
                self.message_user(request, str(error), messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Imported: {summary['created']} created, {summary['updated']} updated, "
                    f"{summary['unchanged']} unchanged.",
                    messages.SUCCESS,
                )
            return redirect("admin:devices_device_changelist")
        preview = {
            "plan": plan,
            "content": content,
            "creates": plan.creates[:IMPORT_PREVIEW_ROWS],
            "updates": plan.updates[:IMPORT_PREVIEW_ROWS],
        }
        return TemplateResponse(request, "admin/devices/device/import.html", {**context, **preview})

    def get_queryset(self, request):
        # device_type is needed by status() on every row, and on the change page.
        return (
            super()
            .get_queryset(request)
            .select_related("site", "device_type")
            .annotate(series_count=related_count(Device, "series"))
        )

    def get_deleted_objects(self, objs, request):
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        if protected:
            # A device with history is protected by its series, which nobody may delete in the admin (that would
            # orphan readings); say "protected" rather than "you lack permission to delete series". Deletion is
            # refused either way while anything is protected; the purge action is the way to delete the history.
            perms_needed = set()
        return deleted, counts, perms_needed, protected

    @admin.display(description="status")
    def status(self, device):
        return device.status().label

    @admin.display(description="series", ordering="series_count")
    def series_count(self, device):
        count = getattr(device, "series_count", None)
        if count is None:  # a device being added
            return "—"
        url = reverse("admin:telemetry_series_changelist") + "?" + urlencode({"device__id__exact": device.pk})
        return format_html('<a href="{}">{}</a>', url, count)

    @admin.action(description="Purge selected devices with all their readings", permissions=["delete"])
    def purge_devices(self, request, queryset):
        """Delete devices with their whole history via ``device_purge``, after a confirmation page."""
        devices = list(queryset)
        if not request.POST.get("post"):
            context = {
                **self.admin_site.each_context(request),
                "title": "Purge devices with all their readings?",
                "opts": self.model._meta,
                "devices": devices,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "media": self.media,
            }
            return TemplateResponse(request, "admin/devices/device/purge_confirmation.html", context)
        with transaction.atomic():
            self.log_deletions(request, devices)
            readings = sum(device_purge(device=device) for device in devices)
        uids = ", ".join(device.uid for device in devices)
        series = sum(device.series_count for device in devices)
        self.message_user(
            request,
            f"Purged {len(devices)} device(s) ({uids}) with {series} series and {readings} readings.",
            messages.SUCCESS,
        )
        return None


# ---------------------------------------------------------------------------------------------------------------------
# Broker (MQTT) credentials
# ---------------------------------------------------------------------------------------------------------------------
@admin.register(AccessToken)
class AccessTokenAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    """Read-only: tokens are issued from the device and gateway lists and revoked here, through services."""

    list_display = ("token", "device", "gateway", "created_at", "last_used_at", "revoked_at")
    list_filter = (CredentialStateFilter, ("device__site", RelatedOnly), ("gateway__site", RelatedOnly))
    list_select_related = ("device", "gateway")
    search_fields = ("prefix", "device__uid", "gateway__uid")
    fields = ("token", "device", "gateway", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    actions = ["revoke_tokens"]

    def scope_queryset(self, queryset, organization_id):
        return queryset.filter(
            Q(device__site__organization_id=organization_id) | Q(gateway__site__organization_id=organization_id)
        )

    def has_add_permission(self, request):
        return False

    @admin.display(description="token")
    def token(self, access_token):
        return access_token.masked

    @admin.action(description="Revoke selected access tokens", permissions=["change"])
    def revoke_tokens(self, request, queryset):
        revoked = sum(access_token_revoke(token=token) for token in queryset)
        self.message_user(request, f"Revoked {revoked} token(s); the broker refuses them within seconds.")


@admin.register(MqttCredential)
class MqttCredentialAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    """Read-only: credentials are issued from the device and gateway lists and revoked here, through services."""

    list_display = ("username", "device", "gateway", "created_at", "revoked_at")
    list_filter = (("device__site", RelatedOnly), ("gateway__site", RelatedOnly))
    list_select_related = ("device", "gateway")
    search_fields = ("username",)
    fields = ("username", "device", "gateway", "created_at", "revoked_at")
    readonly_fields = fields
    actions = ["revoke_credentials"]

    def scope_queryset(self, queryset, organization_id):
        return queryset.filter(
            Q(device__site__organization_id=organization_id) | Q(gateway__site__organization_id=organization_id)
        )

    def has_add_permission(self, request):
        return False

    @admin.action(description="Revoke selected broker credentials", permissions=["change"])
    def revoke_credentials(self, request, queryset):
        revoked = sum(mqtt_credential_revoke(credential=credential) for credential in queryset)
        self.message_user(request, f"Revoked {revoked} credential(s); the broker refuses them within seconds.")
