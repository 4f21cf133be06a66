"""Writes on users: roles and personal API tokens (site grants are the devices app's: ``user_grant_site``)."""

import datetime

from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from apps.core.audit import AuditAction, audit
from apps.users.choices import Role
from apps.users.models import ApiToken


@transaction.atomic
def user_set_role(*, user, role: Role) -> None:
    """Give ``user`` exactly one role; admins also get staff access to the Django admin (the config UI)."""
    user.groups.remove(*Group.objects.filter(name__in=Role.values))
    user.groups.add(Group.objects.get(name=role))
    user.is_staff = role == Role.ADMIN
    user.save(update_fields=["is_staff"])


# ---------------------------------------------------------------------------------------------------------------------
# Personal API tokens
# ---------------------------------------------------------------------------------------------------------------------
@transaction.atomic
def api_token_create(*, user, name: str, expires_at: datetime.datetime | None = None) -> tuple[ApiToken, str]:
    """Create a token acting as ``user``; return ``(token, plaintext)``. The plaintext exists only in this return."""
    if expires_at is not None and expires_at <= timezone.now():
        raise ValueError("The expiry must be in the future.")
    prefix, plaintext = ApiToken.new_plaintext()
    token = ApiToken.objects.create(
        user=user, name=name, prefix=prefix, key_hash=ApiToken.hash_secret(plaintext), expires_at=expires_at
    )
    audit(actor=user, action=AuditAction.TOKEN_CREATE, target=token, after={"name": name, "expires_at": expires_at})
    return token, plaintext


def api_token_authenticate(*, plaintext: str) -> tuple[ApiToken | None, str]:
    """``(token, "")`` for a usable token of an active user, else ``(None, why)``."""
    token = ApiToken.find(plaintext, ApiToken.objects.select_related("user"))
    if token is None:
        return None, "The API token is not valid."
    if reason := token.unusable_reason():
        return None, reason
    if not token.user.is_active:
        return None, "The API token's user is inactive."
    return token, ""


def api_token_touch(*, token: ApiToken) -> None:
    token.touch()


@transaction.atomic
def api_token_revoke(*, token: ApiToken, by) -> bool:
    """Revoke ``token`` on behalf of ``by`` (its owner or a superuser); False when it already was revoked.

    Takes effect on the next request: every request reads the token row, nothing is cached.
    """
    if token.user_id != by.pk and not by.is_superuser:
        raise PermissionDenied("Only the owner may revoke a personal API token.")
    revoked = token.revoke()
    if revoked:
        audit(actor=by, action=AuditAction.TOKEN_REVOKE, target=token)
    return revoked
