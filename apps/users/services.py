"""Writes on users: roles, personal API tokens and two-factor devices (site grants are the devices app's:
``user_grant_site``)."""

import datetime
import math
from dataclasses import dataclass

from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.core.audit import AuditAction, audit
from apps.users.choices import Role, TokenScope
from apps.users.models import ApiToken, default_token_scopes


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
class ApiTokenRefused(ValueError):
    """A token the rules below do not allow; ``field`` names the offending input (None: the request as a whole)."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


def _token_scopes(scopes) -> list[str]:
    scopes = sorted(set(scopes)) if scopes is not None else default_token_scopes()
    if not scopes:
        raise ApiTokenRefused("A token needs at least one scope.", field="scopes")
    unknown = [scope for scope in scopes if scope not in TokenScope.values]
    if unknown:
        raise ApiTokenRefused(f"Unknown scope {unknown[0]!r}; use {', '.join(TokenScope.values)}.", field="scopes")
    return scopes


@transaction.atomic
def api_token_create(
    *,
    user,
    name: str,
    expires_at: datetime.datetime | None = None,
    scopes: list[str] | None = None,
    parent: ApiToken | None = None,
) -> tuple[ApiToken, str]:
    """Create a token acting as ``user``; return ``(token, plaintext)``. The plaintext exists only in this return.

    ``scopes`` default to read only. ``parent`` is the token that authenticated the request, if one did. The rule
    for a token creating a token, so that no token can outlive or outgrow the one it came from:

    * the child's scopes are a subset of the parent's and its expiry is no later (omitted: the parent's);
    * it is linked to the parent: revoking the parent revokes it (``api_token_revoke``), and authentication
      refuses it while the parent is revoked or expired (``api_token_authenticate``), which also covers a parent
      revoked between its request's authentication and this commit;
    * one generation only: a child cannot create tokens. A longer chain would serve no script that one level does
      not (a long-lived token handing short-lived, narrower ones to jobs), and keeping it one level deep keeps the
      check at authentication a join in the query that already loads the token, not a walk up an ancestry.

    Forbidding token-created tokens altogether would be simpler still, but would push such jobs to share the
    long-lived token itself, which is the wider exposure.
    """
    scopes = _token_scopes(scopes)
    if parent is not None:
        # Locked so that a concurrent revocation of the parent either precedes this check or cascades to the child.
        parent = ApiToken.objects.select_for_update().get(pk=parent.pk)
        if parent.user_id != user.pk:
            raise ApiTokenRefused("A token can create tokens only for its own user.")
        if parent.parent_id is not None:
            raise ApiTokenRefused("A token created by another token cannot create tokens; log in to create one.")
        if reason := parent.unusable_reason():
            raise ApiTokenRefused(reason)
        broader = sorted(set(scopes) - set(parent.scopes))
        if broader:
            raise ApiTokenRefused(
                f"This token has only the scopes {', '.join(parent.scopes)}; it cannot create a token with "
                f"{', '.join(broader)}.",
                field="scopes",
            )
        if expires_at is None:
            expires_at = parent.expires_at
        elif parent.expires_at is not None and expires_at > parent.expires_at:
            raise ApiTokenRefused(
                f"A token cannot outlive the token that creates it: expire at {parent.expires_at.isoformat()} or "
                "earlier (omit the expiry for exactly that).",
                field="expires_at",
            )
    if expires_at is not None and expires_at <= timezone.now():
        raise ApiTokenRefused("The expiry must be in the future.", field="expires_at")
    prefix, plaintext = ApiToken.new_plaintext()
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=prefix,
        key_hash=ApiToken.hash_secret(plaintext),
        expires_at=expires_at,
        scopes=scopes,
        parent=parent,
    )
    audit(
        actor=user,
        action=AuditAction.TOKEN_CREATE,
        target=token,
        after={
            "name": name,
            "expires_at": expires_at,
            "scopes": scopes,
            "created_by_token": parent.masked if parent is not None else None,
        },
    )
    return token, plaintext


def api_token_authenticate(*, plaintext: str) -> tuple[ApiToken | None, str]:
    """``(token, "")`` for a usable token of an active user whose parent (if any) is usable, else ``(None, why)``.

    One query: the user and the parent come joined to the token.
    """
    token = ApiToken.find(plaintext, ApiToken.objects.select_related("user", "parent"))
    if token is None:
        return None, "The API token is not valid."
    if reason := token.unusable_reason():
        return None, reason
    if token.parent is not None and (reason := token.parent.unusable_reason()):
        return None, f"The API token that created this one is no longer usable. {reason}"
    if not token.user.is_active:
        return None, "The API token's user is inactive."
    return token, ""


def api_token_touch(*, token: ApiToken) -> None:
    token.touch()


def api_token_may_revoke(*, token: ApiToken, by) -> bool:
    """The owner, a superuser, or an admin of the owner's organization."""
    if token.user_id == by.pk or by.is_superuser:
        return True
    return by.is_org_admin and token.user.organization_id == by.organization_id


@transaction.atomic
def api_token_revoke(*, token: ApiToken, by) -> bool:
    """Revoke ``token`` and the tokens it created on behalf of ``by``; False when ``token`` already was revoked.

    Takes effect on the next request: every request reads the token row (and its parent's), nothing is cached.
    Children still usable are revoked even when the token itself already was, so a cascade is never half done.
    """
    if not api_token_may_revoke(token=token, by=by):
        raise PermissionDenied("Only the owner or an admin of the owner's organization may revoke an API token.")
    revoked = token.revoke()
    if revoked:
        audit(actor=by, action=AuditAction.TOKEN_REVOKE, target=token)
    for child in ApiToken.objects.filter(parent=token, revoked_at__isnull=True):
        if child.revoke():
            audit(actor=by, action=AuditAction.TOKEN_REVOKE, target=child, after={"with_parent": token.masked})
    return revoked


# ---------------------------------------------------------------------------------------------------------------------
# Two-factor authentication (TOTP, django-otp); enforcement is apps.users.two_factor
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CodeCheck:
    """The outcome of a code: the device it verified, else why not and, when throttled, the seconds to wait."""

    device: TOTPDevice | None
    retry_after: int = 0

    @property
    def message(self) -> str:
        if self.retry_after:
            return (
                f"Too many wrong codes. Try again in {self.retry_after} second{'s' if self.retry_after != 1 else ''}."
            )
        return "That code did not match. Enter the code your app shows now (it changes every 30 seconds)."


def _check_code(device: TOTPDevice, token: str) -> CodeCheck:
    # django-otp's throttle: after each wrong code the device refuses for 2**(failures - 1) seconds, so guessing
    # six digits takes forever; its replay guard refuses a code that already verified.
    allowed, details = device.verify_is_allowed()
    if not allowed:
        wait = (details or {}).get("locked_until")
        return CodeCheck(None, max(1, math.ceil((wait - timezone.now()).total_seconds())) if wait else 1)
    if device.verify_token(token):
        return CodeCheck(device)
    return CodeCheck(None)


def totp_device_start(*, user) -> TOTPDevice:
    """The unconfirmed device ``user`` is enrolling (created with a new secret if none is pending).

    Kept until confirmed, so reloading the enrolment page shows the secret already scanned rather than a new one.
    """
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("id").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)
    return device


@transaction.atomic
def totp_device_confirm(*, user, token: str) -> CodeCheck:
    """Confirm ``user``'s pending device with its first code; afterwards logins ask for a code from it."""
    if TOTPDevice.objects.filter(user=user, confirmed=True).exists():
        raise PermissionDenied("This account already has an authenticator; an admin must remove it first.")
    device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=False).order_by("id").first()
    if device is None:
        return CodeCheck(None)
    check = _check_code(device, token)
    if check.device is None:
        return check
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()  # any other half-enrolled secret
    audit(actor=user, action=AuditAction.TWO_FACTOR_ENROL, target=device)
    return check


def totp_verify(*, user, token: str) -> CodeCheck:
    """Check a login's second step against ``user``'s confirmed device; a wrong code is audited.

    Each check is its own transaction (django-otp's ``verify_token`` locks the row), so a wrong code's throttle
    count and audit event are kept although the login does not go on.
    """
    with transaction.atomic():
        device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=True).order_by("id").first()
        if device is None:
            return CodeCheck(None)
        check = _check_code(device, token)
        if check.device is None:
            audit(
                actor=user,
                action=AuditAction.TWO_FACTOR_FAILED,
                target=device,
                after={"throttled": bool(check.retry_after)},
            )
    return check


def totp_device_may_remove(*, device: TOTPDevice, by) -> bool:
    """A superuser, or an admin of the device owner's organization (to let a member who lost a phone enrol anew)."""
    if by.is_superuser:
        return True
    return by.is_org_admin and device.user.organization_id == by.organization_id


@transaction.atomic
def totp_device_remove(*, device: TOTPDevice, by) -> None:
    """Remove ``device``: its owner enrols a new one at the next login (if two-factor applies to them)."""
    if not totp_device_may_remove(device=device, by=by):
        raise PermissionDenied("Only a superuser or an admin of the owner's organization may remove a device.")
    audit(actor=by, action=AuditAction.TWO_FACTOR_REMOVE, target=device, before={"user": device.user.get_username()})
    device.delete()
