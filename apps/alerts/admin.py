"""Admin for rules, alerts (with their history), escalation policies, channels and the delivery log.

Scoped to the user's organization by ``OrganizationScopedAdminMixin``. Bulk acknowledge/resolve call the services,
which check the user's right on each alert's site; the alert's history and the delivery log are read-only.
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import F, Func, IntegerField

from apps.alerts.models import (
    Alert,
    AlertEvent,
    AlertRule,
    Delivery,
    EscalationPolicy,
    EscalationStep,
    NotificationChannel,
    PendingEvaluation,
)
from apps.alerts.services import AlertStateError, alert_acknowledge, alert_resolve, alert_rule_validate
from apps.core.admin_mixins import OrganizationScopedAdminMixin, ReadOnlyAdminMixin, organization_id_for_scope

RelatedOnly = admin.RelatedOnlyFieldListFilter


@admin.register(AlertRule)
class AlertRuleAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    organization_path = "organization"
    list_display = ("name", "kind", "metric_key", "severity", "enabled", "site", "device_type", "device")
    list_filter = ("kind", "severity", "enabled", ("site", RelatedOnly))
    list_select_related = ("site", "device_type", "device")
    search_fields = ("name", "metric_key")
    fieldsets = (
        (None, {"fields": ("organization", "name", "kind", "severity", "enabled", "escalation_policy")}),
        ("Scope", {"fields": ("site", "device_type", "device")}),
        (
            "Threshold",
            {"fields": ("metric_key", "operator", "threshold", "threshold_high", "clear_threshold", "for_duration")},
        ),
        ("Rate of change", {"fields": ("rate_direction", "rate_delta", "rate_window")}),
        ("No data", {"fields": ("silence",)}),
    )
    raw_id_fields = ("device",)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)

        class RuleForm(form):
            def _post_clean(self):
                super()._post_clean()
                # The same specific messages as the API (unknown metric, hysteresis side, durations, kind fields).
                try:
                    alert_rule_validate(self.instance)
                except ValidationError as error:
                    self._update_errors(error)

        return RuleForm


class AlertEventInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The alert's history: written only by the engine and the services."""

    model = AlertEvent
    fields = ("at", "kind", "actor", "note", "value")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")


@admin.register(Alert)
class AlertAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    organization_path = "rule__organization"
    list_display = ("message", "severity", "status", "device", "opened_at", "last_triggered_at", "trigger_count")
    list_filter = ("status", "severity", ("device__site", RelatedOnly), ("rule", RelatedOnly))
    list_select_related = ("device", "rule")
    search_fields = ("message", "device__uid", "device__name")
    date_hierarchy = "opened_at"
    readonly_fields = [field.name for field in Alert._meta.fields]
    inlines = [AlertEventInline]
    actions = ["acknowledge_alerts", "resolve_alerts"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("device__site", "rule", "acknowledged_by", "resolved_by")

    def has_add_permission(self, request):
        return False

    def _bulk(self, request, queryset, service, verb):
        done, refused = 0, []
        for alert in queryset.select_related("device__site"):
            try:
                service(alert=alert, user=request.user, note=f"{verb} in the admin")
                done += 1
            except (PermissionDenied, AlertStateError) as error:
                refused.append(f"#{alert.pk}: {error.messages[0] if hasattr(error, 'messages') else error}")
        if done:
            self.message_user(request, f"{verb} {done} alert(s).", messages.SUCCESS)
        if refused:
            self.message_user(request, f"Left unchanged: {'; '.join(refused)}", messages.WARNING)

    @admin.action(description="Acknowledge selected alerts", permissions=["change"])
    def acknowledge_alerts(self, request, queryset):
        self._bulk(request, queryset, alert_acknowledge, "Acknowledged")

    @admin.action(description="Resolve selected alerts", permissions=["change"])
    def resolve_alerts(self, request, queryset):
        self._bulk(request, queryset, alert_resolve, "Resolved")


class EscalationStepInline(admin.TabularInline):
    model = EscalationStep
    fields = ("position", "delay", "channels", "users")
    filter_horizontal = ("channels", "users")
    extra = 0

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        # The mixin scopes foreign keys; many-to-many choices are scoped here: own channels and colleagues only.
        organization_id = organization_id_for_scope(request.user)
        if organization_id is not None or not request.user.is_superuser:
            kwargs["queryset"] = db_field.related_model._default_manager.filter(organization_id=organization_id)
        return super().formfield_for_manytomany(db_field, request, **kwargs)


@admin.register(EscalationPolicy)
class EscalationPolicyAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    organization_path = "organization"
    list_display = ("name", "organization")
    list_select_related = ("organization",)
    inlines = [EscalationStepInline]


class NotificationChannelForm(forms.ModelForm):
    """The webhook secret is write-only: never rendered back into the page (it is stored encrypted and must stay
    unread by anyone who can open the form); a blank field keeps the stored one."""

    webhook_secret = forms.CharField(
        required=False,
        max_length=128,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Webhook: the HMAC-SHA256 key the receiver verifies signatures with. Leave blank to keep the "
        "current one.",
    )
    remove_webhook_secret = forms.BooleanField(required=False, label="Remove the webhook secret")

    class Meta:
        model = NotificationChannel
        fields = ("organization", "name", "kind", "email_to", "webhook_url", "webhook_secret", "is_active")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stored_secret = self.instance.webhook_secret if self.instance.pk else ""
        if self.stored_secret:
            self.fields["webhook_secret"].help_text = "A secret is set (not shown). " + (
                self.fields["webhook_secret"].help_text
            )

    def clean_webhook_secret(self):
        return self.cleaned_data["webhook_secret"] or self.stored_secret

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("remove_webhook_secret"):
            cleaned["webhook_secret"] = ""
        return cleaned


@admin.register(NotificationChannel)
class NotificationChannelAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    organization_path = "organization"
    form = NotificationChannelForm
    list_display = ("name", "kind", "is_active", "organization", "has_webhook_secret")
    list_filter = ("kind", "is_active")
    list_select_related = ("organization",)
    fields = (
        "organization",
        "name",
        "kind",
        "email_to",
        "webhook_url",
        "webhook_secret",
        "remove_webhook_secret",
        "is_active",
    )

    @admin.display(boolean=True, description="webhook secret")
    def has_webhook_secret(self, channel):
        return bool(channel.webhook_secret)


@admin.register(Delivery)
class DeliveryAdmin(OrganizationScopedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """The delivery log: every notification with its attempts and outcome, read-only."""

    organization_path = "alert__rule__organization"
    list_display = ("created_at", "kind", "target", "status", "attempts", "response_code", "sent_at", "alert")
    list_filter = ("status", "kind")
    list_select_related = ("alert",)
    search_fields = ("target", "last_error")
    readonly_fields = [field.name for field in Delivery._meta.fields]


@admin.register(PendingEvaluation)
class PendingEvaluationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Alert evaluations the sweep could not complete (apps/alerts/outbox.py). They span organizations, so only
    platform operators see them; deleting one gives up on evaluating its readings."""

    list_display = ("created_at", "attempts", "reading_count", "short_error")
    fields = ("created_at", "attempts", "last_error", "reading_count")
    readonly_fields = fields
    date_hierarchy = "created_at"

    def get_queryset(self, request):
        arrays = ("series_ids", "device_ids", "metric_keys", "timestamps", "values")
        readings = Func(F("series_ids"), function="cardinality", output_field=IntegerField())
        return super().get_queryset(request).defer(*arrays).annotate(readings=readings)

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    @admin.display(description="readings", ordering="readings")
    def reading_count(self, pending):
        return pending.readings

    @admin.display(description="last error")
    def short_error(self, pending):
        return pending.last_error[:120]
