"""Reads of users' own objects, always scoped by the requesting user."""

from django.db.models import QuerySet
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.users.models import ApiToken


def api_token_list_for_user(*, user) -> QuerySet[ApiToken]:
    """A user's own personal tokens, revoked and expired ones included (so they can see what they revoked).

    Not even superusers list others' tokens here: a token is personal; admins use ``/organization/tokens`` or the
    Django admin.
    """
    if not user.is_authenticated:
        return ApiToken.objects.none()
    return ApiToken.objects.filter(user=user).select_related("parent")


def api_token_list_for_organization_admin(*, user) -> QuerySet[ApiToken]:
    """Every token of the members of the organization ``user`` administers; nothing for anyone else (a superuser
    without an organization included: platform operators use the Django admin)."""
    if not user.is_authenticated or not user.is_org_admin:
        return ApiToken.objects.none()
    return ApiToken.objects.filter(user__organization_id=user.organization_id).select_related("user", "parent")


def totp_device_for_user(*, user, confirmed: bool = True) -> TOTPDevice | None:
    """The user's authenticator (TOTP) device: the confirmed one, or the one awaiting its first code."""
    if not user.is_authenticated:
        return None
    return TOTPDevice.objects.filter(user=user, confirmed=confirmed).order_by("id").first()
