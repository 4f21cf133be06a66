from django.utils import timezone
from rest_framework import serializers

from apps.users.choices import TokenScope
from apps.users.models import ApiToken


class ApiTokenSerializer(serializers.ModelSerializer):
    """A token as listed: its public prefix, scopes and dates, never anything derived from the secret."""

    key = serializers.SerializerMethodField(help_text="The token's public part, to recognise it: fwt_<prefix>…")
    is_usable = serializers.SerializerMethodField()
    created_by_token = serializers.SerializerMethodField(
        help_text="The public part of the token whose request created this one (revoked with it), or null."
    )

    class Meta:
        model = ApiToken
        fields = (
            "id",
            "name",
            "key",
            "scopes",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
            "is_usable",
            "created_by_token",
        )
        read_only_fields = fields

    def get_key(self, token) -> str:
        return token.masked

    def get_is_usable(self, token) -> bool:
        return token.is_usable() and (token.parent is None or token.parent.is_usable())

    def get_created_by_token(self, token) -> str | None:
        return token.parent.masked if token.parent is not None else None


class OrganizationApiTokenSerializer(ApiTokenSerializer):
    """A member's token as an organization admin sees it: whose it is, and the same public fields."""

    username = serializers.CharField(source="user.username", read_only=True)

    class Meta(ApiTokenSerializer.Meta):
        fields = ("id", "username", *ApiTokenSerializer.Meta.fields[1:])
        read_only_fields = fields


class ApiTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=TokenScope.choices),
        required=False,
        allow_empty=False,
        max_length=len(TokenScope.values),
        help_text="What the token may do: read (GET, HEAD, OPTIONS), write (every other method). Default: read.",
    )

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
