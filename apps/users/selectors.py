"""Reads of users' own objects, always scoped by the requesting user."""

from django.db.models import QuerySet

from apps.users.models import ApiToken


def api_token_list_for_user(*, user) -> QuerySet[ApiToken]:
    """A user's own personal tokens, revoked and expired ones included (so they can see what they revoked).

    Not even superusers list others' tokens here: a token is personal; platform operators use the admin.
    """
    if not user.is_authenticated:
        return ApiToken.objects.none()
    return ApiToken.objects.filter(user=user)
