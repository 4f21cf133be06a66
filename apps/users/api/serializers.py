from django.utils import timezone
from rest_framework import serializers

from apps.users.models import ApiToken


class ApiTokenSerializer(serializers.ModelSerializer):
    """A token as listed: its public prefix and dates, never anything derived from the secret."""

    key = serializers.SerializerMethodField(help_text="The token's public part, to recognise it: fwt_<prefix>…")
    is_usable = serializers.SerializerMethodField()

    class Meta:
        model = ApiToken
        fields = ("id", "name", "key", "created_at", "expires_at", "last_used_at", "revoked_at", "is_usable")
        read_only_fields = fields

    def get_key(self, token) -> str:
        return token.masked

    def get_is_usable(self, token) -> bool:
        return token.is_usable()


class ApiTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)

    def validate_expires_at(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("The expiry must be in the future (omit it for no expiry).")
        return value


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    """The answer to a create: the only response that ever contains the plaintext."""

    token = serializers.CharField(help_text="The whole token. Shown only in this response: store it now.")

    class Meta(ApiTokenSerializer.Meta):
        fields = (*ApiTokenSerializer.Meta.fields, "token")
        read_only_fields = fields
