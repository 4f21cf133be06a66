"""Alerts and alert rules over the API. Rule writes go through the services, whose ValidationErrors become 400s
with the same specific messages; related objects are offered only from the user's scope."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from rest_framework import serializers

from apps.alerts.models import Alert, AlertEvent, AlertRule, EscalationPolicy
from apps.alerts.services import RULE_FIELDS, alert_rule_create, alert_rule_update
from apps.core.api.fields import FiniteFloatField, ScopedPrimaryKeyRelatedField
from apps.devices.selectors import device_list_for_user, device_type_list_for_user, site_list_for_user


class AlertEventSerializer(serializers.ModelSerializer):
    actor = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)  # null: the engine

    class Meta:
        model = AlertEvent
        fields = ("kind", "at", "actor", "note", "value")


class AlertSerializer(serializers.ModelSerializer):
    rule = serializers.SerializerMethodField()
    device = serializers.SlugRelatedField(slug_field="uid", read_only=True)
    site = serializers.IntegerField(source="device.site_id", read_only=True)
    site_name = serializers.CharField(source="device.site.name", read_only=True)
    acknowledged_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    resolved_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = Alert
        fields = (
            "id",
            "rule",
            "device",
            "site",
            "site_name",
            "metric_key",
            "severity",
            "status",
            "message",
            "opened_at",
            "last_triggered_at",
            "trigger_count",
            "first_value",
            "last_value",
            "cleared_at",
            "acknowledged_at",
            "acknowledged_by",
            "acknowledged_note",
            "resolved_at",
            "resolved_by",
            "resolved_note",
        )

    def get_rule(self, alert) -> dict:
        return {"id": alert.rule_id, "name": alert.rule.name, "kind": alert.rule.kind}


class AlertDetailSerializer(AlertSerializer):
    events = AlertEventSerializer(many=True, read_only=True)

    class Meta(AlertSerializer.Meta):
        fields = (*AlertSerializer.Meta.fields, "events")


class AlertNoteSerializer(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class _ScopedField(ScopedPrimaryKeyRelatedField):
    """An optional related object among those the requesting user may see."""

    def __init__(self, scope, **kwargs):
        super().__init__(scope, required=False, allow_null=True, **kwargs)


class AlertRuleSerializer(serializers.ModelSerializer):
    # Thresholds and deltas: a number, finite (the model's validators and constraints bound the durations).
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.FloatField: FiniteFloatField,
    }

    site = _ScopedField(lambda user: site_list_for_user(user=user))
    device = _ScopedField(lambda user: device_list_for_user(user=user))
    device_type = _ScopedField(lambda user: device_type_list_for_user(user=user))
    escalation_policy = _ScopedField(
        lambda user: EscalationPolicy.objects.all()
        if user.is_superuser
        else EscalationPolicy.objects.filter(organization_id=user.organization_id)
    )

    class Meta:
        model = AlertRule
        fields = ("id", *RULE_FIELDS, "created_at", "updated_at")
        read_only_fields = ("id", "created_at", "updated_at")
        # Cross-field rules live in the services (one place for the API and the admin), not in model validators.
        validators = []

    def create(self, validated_data):
        try:
            return alert_rule_create(user=self.context["request"].user, **validated_data)
        except DjangoValidationError as error:
            raise serializers.ValidationError(serializers.as_serializer_error(error)) from None

    def update(self, instance, validated_data):
        try:
            return alert_rule_update(rule=instance, user=self.context["request"].user, **validated_data)
        except DjangoValidationError as error:
            raise serializers.ValidationError(serializers.as_serializer_error(error)) from None
