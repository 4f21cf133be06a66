"""The registry's resources as the REST API shows and takes them. Writes go through ``apps.devices.services``,
whose ValidationErrors (the admin's rules) become field-level 400s; related objects are taken only from the user's
scope, so another tenant's id reads as nonexistent."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.core.api.fields import FiniteFloatField, ScopedPrimaryKeyRelatedField, ScopedSlugRelatedField
from apps.devices import services
from apps.devices.choices import DeviceStatus
from apps.devices.energy import MAX_BANDS, MAX_PRICE, tariff_bands_parse
from apps.devices.models import Device, DeviceType, Gateway, MetricDefinition, Site
from apps.devices.selectors import device_type_list_for_user, gateway_list_for_user, site_list_for_user


def service_errors(error: DjangoValidationError) -> serializers.ValidationError:
    """A service's ValidationError as DRF's 400, field by field (metric definitions by position)."""
    if isinstance(error, services.MetricDefinitionErrors):
        return serializers.ValidationError({"metrics": error.per_metric})
    return serializers.ValidationError(serializers.as_serializer_error(error))


class _RegistrySerializer(serializers.ModelSerializer):
    """Validation is the services' (``full_clean``): no serializer-made unique validators that would say it
    differently, and finite numbers only."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.FloatField: FiniteFloatField,
    }
    create_service = None
    update_service = None
    instance_argument = None

    def create(self, validated_data):
        try:
            return type(self).create_service(user=self.context["request"].user, **validated_data)
        except DjangoValidationError as error:
            raise service_errors(error) from None

    def update(self, instance, validated_data):
        try:
            return type(self).update_service(
                user=self.context["request"].user, **{self.instance_argument: instance}, **validated_data
            )
        except DjangoValidationError as error:
            raise service_errors(error) from None


_WHOLE_HOUR = {"type": "string", "pattern": "^([01][0-9]|2[0-4]):00$", "example": "07:00"}


@extend_schema_field(
    {
        "type": "array",
        "maxItems": MAX_BANDS,
        "items": {
            "type": "object",
            "required": ["from", "to", "price"],
            "additionalProperties": False,
            "properties": {
                "from": _WHOLE_HOUR,
                "to": _WHOLE_HOUR,
                # A number, or a decimal in a string as the admin's JSON may have it (the validator reads both).
                "price": {
                    "oneOf": [
                        {"type": "number", "minimum": 0, "maximum": float(MAX_PRICE)},
                        {"type": "string", "example": "0.32"},
                    ]
                },
                "weekdays": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0, "maximum": 6}},
            },
        },
    }
)
class TariffBandsField(serializers.JSONField):
    """The site's time-of-use bands, checked by the model's own validator (``tariff_bands_parse``: whole local
    hours, no overlaps on a day); the service's ``full_clean`` adds the site-wide rule (a flat price for hours no
    band covers)."""

    def __init__(self, **kwargs):
        super().__init__(validators=[tariff_bands_parse], **kwargs)


class SiteSerializer(_RegistrySerializer):
    # Declared for its bounds; left out, the model's default applies (DRF would validate that float as a decimal).
    emission_factor_kg_per_kwh = serializers.DecimalField(
        max_digits=6, decimal_places=4, min_value=0, required=False, help_text="kg CO₂e per kWh"
    )
    tariff_bands = TariffBandsField(required=False, help_text=Site._meta.get_field("tariff_bands").help_text)
    create_service = services.site_create
    update_service = services.site_update
    instance_argument = "site"

    class Meta:
        model = Site
        fields = (
            "id",
            "name",
            "timezone",
            "address",
            "latitude",
            "longitude",
            "emission_factor_kg_per_kwh",
            "tariff_currency",
            "tariff_flat_price",
            "tariff_bands",
            "discovery_policy",
            "created_at",
        )
        read_only_fields = ("id", "created_at")
        validators = []


class MetricDefinitionSerializer(_RegistrySerializer):
    class Meta:
        model = MetricDefinition
        fields = ("key", "display_name", "unit", "kind", "min_value", "max_value", "precision")
        validators = []


class DeviceTypeSerializer(_RegistrySerializer):
    metrics = MetricDefinitionSerializer(
        many=True,
        required=False,
        help_text="The metrics the type reports. On PATCH, the whole new list (matched by key; others deleted).",
    )
    create_service = services.device_type_create
    update_service = services.device_type_update
    instance_argument = "device_type"

    class Meta:
        model = DeviceType
        fields = (
            "id",
            "name",
            "description",
            "unknown_metric_policy",
            "offline_after",
            "raw_retention_days",
            "payload_schema",
            "metrics",
        )
        read_only_fields = ("id",)
        validators = []


class GatewaySerializer(_RegistrySerializer):
    site = ScopedPrimaryKeyRelatedField(lambda user: site_list_for_user(user=user), help_text="Site id")
    auto_register_type = ScopedPrimaryKeyRelatedField(
        lambda user: device_type_list_for_user(user=user),
        required=False,
        allow_null=True,
        help_text="Device type id auto-registered devices get (the auto_register policy)",
    )
    create_service = services.gateway_create
    update_service = services.gateway_update
    instance_argument = "gateway"

    class Meta:
        model = Gateway
        fields = ("id", "uid", "name", "site", "discovery_policy", "auto_register_type", "created_at")
        read_only_fields = ("id", "created_at")
        validators = []
        extra_kwargs = {"uid": {"validators": []}}  # unique: checked by the service as the admin checks it


class DeviceSerializer(_RegistrySerializer):
    """A device with its status (from ``last_seen`` and its type's timeout, as ``Device.status()``)."""

    site = ScopedPrimaryKeyRelatedField(lambda user: site_list_for_user(user=user), help_text="Site id")
    device_type = ScopedPrimaryKeyRelatedField(
        lambda user: device_type_list_for_user(user=user), help_text="Device type id"
    )
    gateway = ScopedSlugRelatedField(
        lambda user: gateway_list_for_user(user=user),
        slug_field="uid",
        required=False,
        allow_null=True,
        help_text="Gateway id (uid), or null",
    )
    tags = serializers.ListField(
        child=serializers.CharField(max_length=50), required=False, max_length=100, help_text="Lower-case tags"
    )
    metadata = serializers.DictField(required=False, help_text="Free-form facts (a JSON object)")
    status = serializers.SerializerMethodField()
    create_service = services.device_create
    update_service = services.device_update
    instance_argument = "device"

    class Meta:
        model = Device
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
            "created_at",
        )
        read_only_fields = ("last_seen", "created_at")
        validators = []
        extra_kwargs = {"uid": {"validators": []}}

    def get_status(self, device) -> DeviceStatus:
        # Annotated by the list's query (devices_with_status); computed by the same rule for a single device.
        return getattr(device, "status_code", None) or device.status()


class DeviceRemovedSerializer(serializers.Serializer):
    result = serializers.ChoiceField(choices=services.DeviceRemoval.choices)
    device = DeviceSerializer(required=False, help_text="The device as it is now (when deactivated)")


class ImportErrorSerializer(serializers.Serializer):
    row = serializers.IntegerField(help_text="1 = the first device (the CSV header is not counted)")
    field = serializers.CharField(help_text="The column")
    reason = serializers.CharField()


class ImportResultSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=["create", "upsert"])
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    errors = ImportErrorSerializer(many=True)
    dry_run = serializers.BooleanField()


class ImportRowSerializer(serializers.Serializer):
    """One device of a JSON import (the CSV has the same columns)."""

    uid = serializers.CharField()
    name = serializers.CharField()
    site = serializers.CharField(help_text="Site name")
    type = serializers.CharField(help_text="Device type name")
    gateway = serializers.CharField(required=False, allow_blank=True, help_text="Gateway id (uid)")
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    metadata = serializers.DictField(required=False)


class ImportQuerySerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=["create", "upsert"], default="create", required=False)
    dry_run = serializers.BooleanField(default=False, required=False, help_text="Plan and report; write nothing")


class DeviceRemoveQuerySerializer(serializers.Serializer):
    purge = serializers.BooleanField(
        default=False,
        required=False,
        help_text="Confirm that a device with history is deleted with all its readings (else it is deactivated)",
    )
