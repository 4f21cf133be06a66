"""Writes on sites, devices, gateways and their API keys."""

from django.db import transaction

from apps.audit.choices import AuditAction
from apps.audit.services import audit_record
from apps.devices.models import ApiKey, Device, Gateway


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
    audit_record(
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
def api_key_revoke(*, api_key: ApiKey) -> bool:
    """Revoke ``api_key``; return False when it already was (the first revocation time is kept)."""
    revoked = api_key.revoke()
    if revoked:
        audit_record(actor=None, action=AuditAction.KEY_REVOKE, target=api_key, after={"prefix": api_key.prefix})
    return revoked


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
