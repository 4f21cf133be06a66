from django.utils import timezone
from rest_framework import serializers

from apps.devices.models import ApiKey


class ApiKeySerializer(serializers.ModelSerializer):
    """A gateway key as shown to admins: public prefix, state and lineage, never anything derived from the secret."""

    gateway = serializers.CharField(source="gateway.uid", read_only=True)
    replaces = serializers.CharField(source="replaces.prefix", read_only=True, default=None, allow_null=True)
    is_usable = serializers.SerializerMethodField()

    class Meta:
        model = ApiKey
        fields = (
            "prefix",
            "gateway",
            "name",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
            "rotation_due_at",
            "replaces",
            "is_usable",
        )
        read_only_fields = fields

    def get_is_usable(self, api_key) -> bool:
        return api_key.is_usable()


class ApiKeyIssuedSerializer(ApiKeySerializer):
    """The answer to an issue or a rotation: the only response that ever contains the plaintext."""

    key = serializers.CharField(help_text="The whole key (X-API-Key). Shown only in this response: store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields = (*ApiKeySerializer.Meta.fields, "key")
        read_only_fields = fields


class ApiKeyIssueSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False, default="", allow_blank=True)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)

    def validate_expires_at(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("The expiry must be in the future (omit it for no expiry).")
        return value
