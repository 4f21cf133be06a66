"""Writes on sites (and who may see them), device types, devices, gateways and their API keys."""

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, models, transaction
from django.db.models import OuterRef, ProtectedError, RestrictedError, Subquery
from django.utils import timezone
from guardian.models import GroupObjectPermission, UserObjectPermission
from guardian.shortcuts import assign_perm, remove_perm

from apps.core.audit import SYSTEM_ACTOR, AuditAction, audit, audit_many
from apps.core.signals import rows_bulk_changed
from apps.devices.models import (
    AccessToken,
    ApiKey,
    Device,
    DeviceType,
    DiscoveredDevice,
    Gateway,
    MetricDefinition,
    Site,
)
from apps.devices.selectors import user_can_operate_site, user_configures_organization
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


# ---------------------------------------------------------------------------------------------------------------------
# The registry: sites, device types with their metrics, gateways and devices, as the REST API writes them
#
# The rules are the admin's: every write is ``full_clean()`` (the field validators, the models' ``clean()`` and
# their constraints, reported on the field they are about) and then ``save()``, which the audit log records with
# the changed fields before and after, as for a change in the admin. Who may write is checked here too, after the
# caller found the object among those the user may see (``apps.devices.selectors``: anything else is a 404).
# ---------------------------------------------------------------------------------------------------------------------
# What an operator of a site may change on its devices; everything else is organization configuration.
OPERATOR_DEVICE_FIELDS = frozenset({"name", "metadata", "tags"})


class MetricDefinitionErrors(ValidationError):
    """Field errors of a device type's metric definitions, one dict per definition in the order given (empty for
    the valid ones), so the API can answer them where they belong (``metrics[1].min_value``)."""

    def __init__(self, per_metric: list[dict]):
        self.per_metric = per_metric
        lines = [
            f"metric {position}: {name}: {message}"
            for position, errors in enumerate(per_metric, start=1)
            for name, messages in errors.items()
            for message in messages
        ]
        super().__init__({"metrics": lines})


class RegistryConflict(Exception):
    """The change cannot be made as asked (an object still in use); the message says why and what to do."""


def _require_configuration_rights(user) -> None:
    if not user_configures_organization(user=user):
        raise PermissionDenied("Only organization admins may change the registry.")


def _organization_of(user) -> int:
    if user.organization_id is None:
        raise PermissionDenied("You belong to no organization; platform operators use the Django admin.")
    return user.organization_id


def _assign(instance, changes: dict) -> None:
    for name, value in changes.items():
        setattr(instance, name, value)


def _clean_and_save(instance):
    instance.full_clean()
    instance.save()
    return instance


def _delete_unless_protected(instance, what_protects: str) -> None:
    try:
        with transaction.atomic():
            instance.delete()
    except (ProtectedError, RestrictedError):
        raise RegistryConflict(f"{instance} still has {what_protects}; remove or move them first.") from None


@transaction.atomic
def site_create(*, user, **fields) -> Site:
    _require_configuration_rights(user)
    return _clean_and_save(Site(organization_id=_organization_of(user), **fields))


@transaction.atomic
def site_update(*, user, site: Site, **changes) -> Site:
    _require_configuration_rights(user)
    _assign(site, changes)
    return _clean_and_save(site)


@transaction.atomic
def site_delete(*, user, site: Site) -> None:
    """Delete an empty site (no devices, gateways or archived readings) and the grants that named it."""
    _require_configuration_rights(user)
    _delete_unless_protected(site, "devices, gateways or archived readings")
    # Guardian's grants point at the site by a generic key, which no cascade follows.
    for grant_model in (UserObjectPermission, GroupObjectPermission):
        grant_model.objects.filter(
            content_type=ContentType.objects.get_for_model(Site), object_pk=str(site.pk)
        ).delete()


def _metric_errors(definitions: list[MetricDefinition]) -> list[dict]:
    """Per definition, its field errors (``full_clean`` with the device type's own checks left to the type), and
    a repeated key reported on the second occurrence."""
    errors, seen = [], set()
    for definition in definitions:
        try:
            definition.full_clean(exclude=["device_type"], validate_unique=False, validate_constraints=False)
            definition.validate_constraints(exclude=["device_type"])
            found = {}
        except ValidationError as error:
            found = error.message_dict
        if definition.key in seen:
            found.setdefault("key", []).append(f"The key {definition.key!r} appears twice.")
        seen.add(definition.key)
        errors.append(found)
    return errors


def _metrics_apply(device_type: DeviceType, metrics: list[dict], *, replace: bool) -> None:
    """Validate every definition, then create or update them by key; with ``replace``, delete the others."""
    existing = {definition.key: definition for definition in device_type.metrics.all()}
    definitions = []
    for fields in metrics:
        definition = existing.get(fields.get("key")) or MetricDefinition(device_type=device_type)
        _assign(definition, fields)
        definitions.append(definition)
    errors = _metric_errors(definitions)
    if any(errors):
        raise MetricDefinitionErrors(errors)
    for definition in definitions:
        definition.device_type = device_type
        definition.save()
    if replace:
        kept = {definition.key for definition in definitions}
        for key, definition in existing.items():
            if key not in kept:
                definition.delete()


@transaction.atomic
def device_type_create(*, user, metrics: list[dict] = (), **fields) -> DeviceType:
    _require_configuration_rights(user)
    device_type = _clean_and_save(DeviceType(organization_id=_organization_of(user), **fields))
    _metrics_apply(device_type, list(metrics), replace=False)
    return device_type


@transaction.atomic
def device_type_update(*, user, device_type: DeviceType, metrics: list[dict] | None = None, **changes) -> DeviceType:
    """Change the type; ``metrics``, when given, is the whole new list (matched by key; the others are deleted)."""
    _require_configuration_rights(user)
    _assign(device_type, changes)
    _clean_and_save(device_type)
    if metrics is not None:
        _metrics_apply(device_type, list(metrics), replace=True)
        # The caller's instance may hold its metrics prefetched (the API's selector): they are stale now.
        getattr(device_type, "_prefetched_objects_cache", {}).pop("metrics", None)
    return device_type


@transaction.atomic
def device_type_delete(*, user, device_type: DeviceType) -> None:
    _require_configuration_rights(user)
    _delete_unless_protected(device_type, "devices or alert rules of this type")


@transaction.atomic
def gateway_create(*, user, **fields) -> Gateway:
    _require_configuration_rights(user)
    return _clean_and_save(Gateway(**fields))


@transaction.atomic
def gateway_update(*, user, gateway: Gateway, **changes) -> Gateway:
    _require_configuration_rights(user)
    if "site" in changes and changes["site"].pk != gateway.site_id and gateway.devices.exists():
        raise ValidationError({"site": "The gateway still forwards for devices of its site; move those first."})
    _assign(gateway, changes)
    return _clean_and_save(gateway)


@transaction.atomic
def gateway_delete(*, user, gateway: Gateway) -> None:
    """Delete a gateway no device names (its keys and broker logins go with it)."""
    _require_configuration_rights(user)
    if gateway.devices.exists():
        raise RegistryConflict(f"{gateway} still forwards for devices; move or delete them first.")
    gateway.delete()


@transaction.atomic
def device_create(*, user, **fields) -> Device:
    _require_configuration_rights(user)
    return _clean_and_save(Device(**fields))


@transaction.atomic
def device_update(*, user, device: Device, **changes) -> Device:
    """Admins change anything; operators of the device's site its name, metadata and tags."""
    if not user_configures_organization(user=user):
        if not user_can_operate_site(user=user, site=device.site):
            raise PermissionDenied("Only operators of the site and organization admins may change its devices.")
        if other := sorted(set(changes) - OPERATOR_DEVICE_FIELDS):
            raise PermissionDenied(
                f"Operators may change a device's {', '.join(sorted(OPERATOR_DEVICE_FIELDS))}; "
                f"{', '.join(other)} are for organization admins."
            )
    _assign(device, changes)
    return _clean_and_save(device)


class DeviceRemoval(models.TextChoices):
    DELETED = "deleted", "Deleted (it had no history)"
    DEACTIVATED = "deactivated", "Deactivated (its history is kept; new readings are refused)"
    PURGED = "purged", "Purged with its whole history"


@transaction.atomic
def device_remove(*, user, device: Device, purge: bool = False) -> DeviceRemoval:
    """What the admin offers: a device without history is deleted; one with history is deactivated, unless
    ``purge`` confirms that its history goes too (``device_purge``)."""
    _require_configuration_rights(user)
    if purge:
        device_purge(device=device)
        return DeviceRemoval.PURGED
    try:
        with transaction.atomic():
            device.delete()
    except (ProtectedError, RestrictedError):  # its series protect it: it has history
        if device.is_active:
            device.is_active = False
            device.save(update_fields=["is_active"])
        return DeviceRemoval.DEACTIVATED
    return DeviceRemoval.DELETED


# ---------------------------------------------------------------------------------------------------------------------
# Discovery: devices a gateway sends readings for before anyone registered them
# ---------------------------------------------------------------------------------------------------------------------
# Set-based (ingest calls it inside a flush): one insert for every new uid, skipping a uid registered meanwhile;
# the subselects make a type or gateway deleted since the directory loaded register nothing rather than fail the
# flush on a foreign key. Sorted, so two listeners registering the same uids take their index locks in one order.
_AUTO_REGISTER = """
    INSERT INTO devices_device (uid, name, site_id, device_type_id, gateway_id, metadata, tags, is_active, created_at)
    SELECT wanted.uid, wanted.uid, site.id, device_type.id,
           (SELECT id FROM devices_gateway WHERE id = %(gateway)s AND site_id = site.id), '{}'::jsonb, '{}', true, now()
    FROM unnest(%(uids)s::text[]) AS wanted (uid)
    JOIN devices_site site ON site.id = %(site)s
    JOIN devices_devicetype device_type
      ON device_type.id = %(type)s AND device_type.organization_id = site.organization_id
    ORDER BY wanted.uid
    ON CONFLICT (uid) DO NOTHING
    RETURNING id
"""


def devices_auto_register(*, site_id: int, device_type_id: int, gateway_id: int | None, uids: list[str]) -> dict:
    """Register the devices ``uids`` on the site with the gateway's auto-register type; return ``{uid: id}`` of
    those now registered on that site (created here, or by another listener meanwhile). A uid registered on
    another site is left out: ingest refuses its readings. Audited, and marks their discoveries adopted."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                _AUTO_REGISTER, {"uids": sorted(uids), "site": site_id, "type": device_type_id, "gateway": gateway_id}
            )
            created = [device_id for (device_id,) in cursor.fetchall()]
        registered = dict(Device.objects.filter(site_id=site_id, uid__in=uids).values_list("uid", "id"))
        if created:
            devices = list(Device.objects.filter(id__in=created).select_related("site"))
            audit_many(
                actor=SYSTEM_ACTOR,
                action=AuditAction.DEVICE_AUTO_REGISTER,
                changes=[(device, None, {"uid": device.uid, "device_type": device_type_id}) for device in devices],
            )
            DiscoveredDevice.objects.filter(site_id=site_id, uid__in=[d.uid for d in devices]).update(
                adopted_device_id=Subquery(Device.objects.filter(uid=OuterRef("uid")).values("id")[:1]),
                adopted_at=timezone.now(),
            )
            rows_bulk_changed.send(sender=Device)  # the catalogue and the broker's files, after commit
    return registered


@transaction.atomic
def discovered_device_adopt(*, user, discovered: DiscoveredDevice, device_type: DeviceType, name: str = "") -> Device:
    """Register a discovered device on its site, forwarded by the gateway that sent it, with ``device_type``
    (validated and audited as any device the admin creates); the discovery is kept, marked adopted."""
    device = device_create(
        user=user,
        uid=discovered.uid,
        name=name or discovered.uid,
        site=discovered.site,
        device_type=device_type,
        gateway=discovered.gateway if discovered.gateway and discovered.gateway.site_id == discovered.site_id else None,
    )
    discovered.adopted_device = device
    discovered.adopted_at = timezone.now()
    discovered.save(update_fields=["adopted_device", "adopted_at"])
    return device
