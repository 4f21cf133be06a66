"""Writes on sites, devices, gateways and their API keys."""

import datetime
import secrets

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.devices.models import ApiKey, Device, Gateway


def _new_key_material() -> tuple[str, str]:
    """Return (prefix, plaintext). The prefix is random too, so it reveals nothing and collisions are rare."""
    prefix = secrets.token_hex(ApiKey.PREFIX_LENGTH // 2)
    return prefix, f"fwk_{prefix}_{secrets.token_urlsafe(24)}"


def api_key_issue(*, gateway: Gateway, name: str = "", expires_at=None, replaces: ApiKey | None = None):
    """Create a key for ``gateway``; return ``(api_key, plaintext)``. The plaintext exists only in this return."""
    while True:
        prefix, plaintext = _new_key_material()
        if not ApiKey.objects.filter(prefix=prefix).exists():
            break
    api_key = ApiKey.objects.create(
        gateway=gateway,
        name=name,
        prefix=prefix,
        key_hash=ApiKey.hash_key(plaintext),
        expires_at=expires_at,
        replaces=replaces,
    )
    return api_key, plaintext


def api_key_authenticate(*, plaintext: str) -> ApiKey | None:
    """The usable key that ``plaintext`` is, or None: unknown, malformed, expired and revoked keys all fail.

    Lookup is by the prefix (indexed, unique); the hash is compared in constant time so timing reveals nothing
    about how much of a guessed secret was right.
    """
    parts = (plaintext or "").split("_", 2)
    if len(parts) != 3 or parts[0] != "fwk" or len(parts[1]) != ApiKey.PREFIX_LENGTH:
        return None
    api_key = ApiKey.objects.select_related("gateway__site").filter(prefix=parts[1]).first()
    if api_key is None or not api_key.matches(plaintext) or not api_key.is_usable():
        return None
    return api_key


def api_key_failure_reason(*, plaintext: str) -> tuple[str, str]:
    """Why ``plaintext`` did not authenticate, as (code, message) for the 401 answer.

    Expired and revoked are only told to a caller who holds the whole correct key, so the answer reveals
    nothing to someone guessing.
    """
    parts = (plaintext or "").split("_", 2)
    api_key = None
    if len(parts) == 3 and parts[0] == "fwk" and len(parts[1]) == ApiKey.PREFIX_LENGTH:
        api_key = ApiKey.objects.filter(prefix=parts[1]).first()
    if api_key is None or not api_key.matches(plaintext):
        return "invalid_api_key", "The API key is not valid."
    if api_key.revoked_at is not None:
        return "revoked_api_key", f"The API key was revoked at {api_key.revoked_at.isoformat()}."
    return "expired_api_key", f"The API key expired at {api_key.expires_at.isoformat()}."


def api_key_touch(*, api_key: ApiKey) -> None:
    """Record use, at most once a minute per key, so a busy gateway does not write a row per request."""
    now = timezone.now()
    ApiKey.objects.filter(pk=api_key.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - datetime.timedelta(minutes=1))
    ).update(last_used_at=now)


def api_key_revoke(*, api_key: ApiKey) -> bool:
    """Revoke ``api_key``; return False when it already was (the first revocation time is kept)."""
    updated = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    api_key.refresh_from_db(fields=["revoked_at"])
    return updated == 1


@transaction.atomic
def device_purge(*, device: Device) -> int:
    """Delete a device with its whole history (readings, latest values, series); return readings deleted.

    Readings have no database foreign key (ingest speed), so this is the one place that removes them.
    """
    from apps.telemetry.models import LatestValue, Reading, Series

    series_ids = list(Series.objects.filter(device=device).values_list("id", flat=True))
    readings_deleted, _ = Reading.objects.filter(series_id__in=series_ids).delete()
    LatestValue.objects.filter(series_id__in=series_ids).delete()
    Series.objects.filter(id__in=series_ids).delete()
    device.delete()
    return readings_deleted
