"""Writes on sites (and who may see them), devices, gateways and their API keys."""

from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from apps.core.audit import AuditAction, audit
from apps.devices.models import AccessToken, ApiKey, Device, Gateway, Site
from apps.devices.signals import device_purging


@transaction.atomic
def user_grant_site(*, user, site: Site, operate: bool) -> None:
    """Let ``user`` see ``site``; with ``operate``, also acknowledge alerts and manage rules there."""
    if user.organization_id != site.organization_id:
        raise ValueError(f"{user} belongs to another organization than site {site}.")
    assign_perm("devices.view_site", user, site)
    if operate:
        assign_perm("devices.operate_site", user, site)
    else:
        remove_perm("devices.operate_site", user, site)


@transaction.atomic
def user_revoke_site(*, user, site: Site) -> None:
    remove_perm("devices.view_site", user, site)
    remove_perm("devices.operate_site", user, site)


@transaction.atomic
def api_key_issue(*, gateway: Gateway, name: str = "", expires_at=None, replaces: ApiKey | None = None):
    """Create a key for ``gateway``; return ``(api_key, plaintext)``. The plaintext exists only in this return.

    Audited as ``key.rotate`` when it ``replaces`` a key (``api_key_rotate``), else ``key.issue``.
    """
    prefix, plaintext = ApiKey.new_plaintext()
    api_key = ApiKey.objects.create(
        gateway=gateway,
        name=name,
        prefix=prefix,
        key_hash=ApiKey.hash_secret(plaintext),
        expires_at=expires_at,
        replaces=replaces,
    )
    audit(
        actor=None,
        action=AuditAction.KEY_ROTATE if replaces else AuditAction.KEY_ISSUE,
        target=api_key,
        after={"prefix": api_key.prefix, "replaces": replaces.prefix if replaces else None, "expires_at": expires_at},
    )
    return api_key, plaintext


def api_key_authenticate(*, plaintext: str) -> ApiKey | None:
    """The usable key that ``plaintext`` is, or None: unknown, malformed, expired and revoked keys all fail."""
    api_key = ApiKey.find(plaintext, ApiKey.objects.select_related("gateway__site"))
    return api_key if api_key is not None and api_key.is_usable() else None


def api_key_failure_reason(*, plaintext: str) -> tuple[str, str]:
    """Why ``plaintext`` did not authenticate, as (code, message) for the 401 answer."""
    api_key = ApiKey.find(plaintext)
    if api_key is None:
        return "invalid_api_key", "The API key is not valid."
    code = "revoked_api_key" if api_key.revoked_at is not None else "expired_api_key"
    return code, api_key.unusable_reason()


def api_key_touch(*, api_key: ApiKey) -> None:
    api_key.touch()


@transaction.atomic
def access_token_issue(*, device: Device | None = None, gateway: Gateway | None = None) -> tuple[AccessToken, str]:
    """A ThingsBoard-style access token for a device or a gateway; return ``(token, plaintext)``, shown once.

    The owner's previous token is revoked (one active per owner: issuing again is how a token is rotated). The
    broker hears of both at the sync the commit triggers (``apps/devices/receivers.py``).
    """
    if (device is None) == (gateway is None):
        raise ValueError("Pass exactly one of device or gateway.")
    owner = {"device": device} if device else {"gateway": gateway}
    AccessToken.objects.filter(**owner, revoked_at__isnull=True).update(revoked_at=timezone.now())
    prefix, plaintext = AccessToken.new_plaintext()
    token = AccessToken.objects.create(**owner, prefix=prefix, key_hash=AccessToken.hash_secret(plaintext))
    audit(actor=None, action=AuditAction.ACCESS_TOKEN_ISSUE, target=token, after={"prefix": prefix})
    return token, plaintext


def access_token_authenticate(*, plaintext: str) -> AccessToken | None:
    """The usable token ``plaintext`` is, with its device or gateway (and site), or None."""
    token = AccessToken.find(plaintext, AccessToken.objects.select_related("device__site", "gateway__site"))
    return token if token is not None and token.is_usable() else None


@transaction.atomic
def access_token_revoke(*, token: AccessToken) -> bool:
    """Revoke ``token``; return False when it already was."""
    revoked = token.revoke()
    if revoked:
        audit(actor=None, action=AuditAction.ACCESS_TOKEN_REVOKE, target=token, after={"prefix": token.prefix})
    return revoked


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey) -> bool:
    """Revoke ``api_key``; return False when it already was (the first revocation time is kept)."""
    revoked = api_key.revoke()
    if revoked:
        audit(actor=None, action=AuditAction.KEY_REVOKE, target=api_key, after={"prefix": api_key.prefix})
    return revoked


@transaction.atomic
def device_purge(*, device: Device) -> int:
    """Delete a device with its whole history (readings, latest values, series, rollups); return readings deleted.

    The history belongs to telemetry, which deletes it on ``device_purging`` (readings have no database foreign
    key, for ingest speed, so this is the one way they are removed with their device).
    """
    with transaction.atomic():
        # The row lock first: a flush storing readings for this device holds KEY SHARE on it until it commits, so
        # we wait for it and then remove what it stored, and no flush stores anything for it after this point
        # (ingest refuses the readings as unknown_device instead of leaving them in deleted series).
        Device.objects.select_for_update().filter(pk=device.pk).first()
        responses = device_purging.send(sender=Device, device=device)
        device.delete()
    return sum(deleted for _, deleted in responses if isinstance(deleted, int))
