"""Bulk import and export of devices: a fleet as CSV or JSON, in one all-or-nothing, set-based write.

The columns are ``IMPORT_COLUMNS``: the device id, its name, its site and type by name, its gateway by id, its
tags (comma-separated in CSV, a list in JSON) and its metadata (a JSON object; JSON text in a CSV cell). The export
(``GET /api/v1/devices?format=csv``) writes the same columns, so a fleet exported and imported again round-trips.

An import is planned first (``device_import_plan``): every row is resolved and validated with the admin's rules
(the model's field validators and ``clean()``, the same scope the user has) and every problem reported as ``(row,
field, reason)``, the first device being row 1. Only a plan without errors is applied (``device_import_apply``): one
transaction of ``bulk_create`` and ``bulk_update`` batches, audited per device with before and after as a save in the
admin would be, so 10,000 rows take seconds, not minutes. Rows that would change nothing are left alone, so
importing the same file twice changes nothing the second time.

Modes: ``create`` refuses a device id that exists; ``upsert`` updates it (when it is on one of the user's sites).
"""

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, models, transaction

from apps.core.audit import AuditAction, audit_many
from apps.core.signals import rows_bulk_changed
from apps.devices.models import Device
from apps.devices.selectors import (
    device_type_list_for_user,
    gateway_list_for_user,
    site_list_for_user,
    user_configures_organization,
)
from apps.devices.services import RegistryConflict

IMPORT_COLUMNS = ("uid", "name", "site", "type", "gateway", "tags", "metadata")
REQUIRED_COLUMNS = ("uid", "name", "site", "type")
MAX_IMPORT_ROWS = 50_000
BATCH_SIZE = 1000
TAG_SEPARATOR = ","


class ImportMode(models.TextChoices):
    CREATE = "create", "Create only: an existing device id is an error"
    UPSERT = "upsert", "Create or update by device id"


# The device fields an import sets, and the column each one's errors are reported under.
WRITTEN_FIELDS = ("name", "site", "device_type", "gateway", "tags", "metadata")
COLUMN_OF_FIELD = {"device_type": "type", "__all__": "uid"}
RESOLVED_FIELDS = ["site", "device_type", "gateway"]


@dataclass(frozen=True)
class RowError:
    row: int  # 1 = the first device (the CSV header is row 0)
    field: str
    reason: str

    def as_dict(self) -> dict:
        return {"row": self.row, "field": self.field, "reason": self.reason}


@dataclass
class ImportPlan:
    mode: str
    creates: list[Device] = field(default_factory=list)
    # (device as it will be, the changed fields before, the same fields after)
    updates: list[tuple[Device, dict, dict]] = field(default_factory=list)
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "mode": self.mode,
            "created": len(self.creates),
            "updated": len(self.updates),
            "unchanged": self.unchanged,
            "errors": [error.as_dict() for error in self.errors],
        }


# ---------------------------------------------------------------------------------------------------------------------
# Reading a file
# ---------------------------------------------------------------------------------------------------------------------
class ImportFileError(ValueError):
    """The file is not a table of devices at all (not CSV/JSON, no header, too many rows): nothing to plan."""


def rows_from_csv(text: str) -> list[dict]:
    """The rows of a CSV file with a header of ``IMPORT_COLUMNS`` (any order; ``gateway``, ``tags`` and
    ``metadata`` may be left out)."""
    if "\x00" in text:
        raise ImportFileError("The file contains NUL characters: it is not a CSV text file.")
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")), strict=True)
    try:
        header = reader.fieldnames or []
        _check_columns([name.strip() for name in header])
        rows = []
        for record in reader:
            if len(rows) >= MAX_IMPORT_ROWS:
                raise ImportFileError(f"At most {MAX_IMPORT_ROWS} devices per import.")
            if None in record:
                raise ImportFileError(f"Row {len(rows) + 1} has more cells than the header has columns.")
            rows.append({(name or "").strip(): value for name, value in record.items()})
    except csv.Error as error:
        raise ImportFileError(f"Not a readable CSV file: {error}.") from None
    return rows


def rows_from_json(data) -> list[dict]:
    """The rows of a JSON array of objects (or ``{"devices": [...]}``)."""
    if isinstance(data, dict) and isinstance(data.get("devices"), list):
        data = data["devices"]
    if not isinstance(data, list):
        raise ImportFileError('Send a JSON array of devices (or {"devices": [...]}).')
    if len(data) > MAX_IMPORT_ROWS:
        raise ImportFileError(f"At most {MAX_IMPORT_ROWS} devices per import.")
    columns = set()
    for position, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise ImportFileError(f"Row {position} is not a JSON object.")
        columns |= row.keys()
    if unknown := sorted(columns - set(IMPORT_COLUMNS)):
        raise ImportFileError(f"Unknown columns: {', '.join(unknown)} (the columns are {', '.join(IMPORT_COLUMNS)}).")
    return data


def _check_columns(header: list[str]) -> None:
    if not header:
        raise ImportFileError(f"The file has no header row; the columns are {', '.join(IMPORT_COLUMNS)}.")
    if missing := [name for name in REQUIRED_COLUMNS if name not in header]:
        raise ImportFileError(f"Missing columns: {', '.join(missing)}.")
    if unknown := sorted(set(header) - set(IMPORT_COLUMNS)):
        raise ImportFileError(f"Unknown columns: {', '.join(unknown)} (the columns are {', '.join(IMPORT_COLUMNS)}).")


# ---------------------------------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------------------------------
def _text(value) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError("must be text")
    return value.strip()


def _tags(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [tag.strip() for tag in value.split(TAG_SEPARATOR) if tag.strip()]
    if isinstance(value, list) and all(isinstance(tag, str) for tag in value):
        return value
    raise ValueError("must be a list of tags (comma-separated in CSV)")


def _metadata(value) -> dict:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError('must be a JSON object, e.g. {"serial": "A1"}') from None
    if not isinstance(value, dict):
        raise ValueError('must be a JSON object, e.g. {"serial": "A1"}')
    return value


def _index_unique(objects: Iterable, key) -> dict:
    """``key(obj) -> obj``, with None for a key several objects share (a superuser's same-named sites)."""
    index: dict = {}
    for obj in objects:
        index[key(obj)] = None if key(obj) in index else obj
    return index


class _Catalogue:
    """What a user's rows may name, loaded once (a statement each), so planning 10,000 rows queries nothing more."""

    def __init__(self, user, uids: list[str]):
        self.sites = _index_unique(site_list_for_user(user=user), lambda site: site.name)
        self.types = _index_unique(device_type_list_for_user(user=user), lambda t: (t.organization_id, t.name))
        self.gateways = {gateway.uid: gateway for gateway in gateway_list_for_user(user=user)}
        self.visible_site_ids = {site.id for site in self.sites.values() if site is not None}
        self.existing = {
            device.uid: device
            for device in Device.objects.filter(uid__in=uids).select_related("site", "device_type", "gateway")
        }


def _written(device: Device) -> dict:
    return {
        "name": device.name,
        "site_id": device.site_id,
        "device_type_id": device.device_type_id,
        "gateway_id": device.gateway_id,
        "tags": list(device.tags),
        "metadata": device.metadata,
    }


def device_import_plan(*, user, rows: list[dict], mode: str = ImportMode.CREATE) -> ImportPlan:
    """Resolve and validate every row; nothing is written. See the module docstring."""
    if not user_configures_organization(user=user):
        raise PermissionDenied("Only organization admins may import devices.")
    plan = ImportPlan(mode=ImportMode(mode))
    uids = [row.get("uid") for row in rows if isinstance(row.get("uid"), str)]
    catalogue = _Catalogue(user, [uid.strip() for uid in uids])
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        errors = _plan_row(plan, catalogue, seen, number, row)
        plan.errors.extend(RowError(number, name, reason) for name, reason in errors)
    if plan.errors:
        plan.creates, plan.updates, plan.unchanged = [], [], 0
    return plan


def _plan_row(plan: ImportPlan, catalogue: _Catalogue, seen: dict, number: int, row: dict) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    values = {}
    for column, parse in (("uid", _text), ("name", _text), ("site", _text), ("type", _text), ("gateway", _text)):
        try:
            values[column] = parse(row.get(column))
        except ValueError as error:
            errors.append((column, str(error)))
    for column, parse in (("tags", _tags), ("metadata", _metadata)):
        try:
            values[column] = parse(row.get(column))
        except ValueError as error:
            errors.append((column, str(error)))
    if errors:
        return errors
    for column in REQUIRED_COLUMNS:
        if not values[column]:
            errors.append((column, "This column is required."))
    uid = values["uid"]
    if uid in seen:
        errors.append(("uid", f"Device id {uid!r} is already on row {seen[uid]}."))
    elif uid:
        seen[uid] = number

    site = catalogue.sites.get(values["site"]) if values["site"] else None
    if values["site"] and site is None:
        reason = "ambiguous: several of your organizations' sites" if values["site"] in catalogue.sites else "no"
        errors.append(("site", f"{reason} site named {values['site']!r} among your sites."))
    device_type = None
    if site is not None and values["type"]:
        device_type = catalogue.types.get((site.organization_id, values["type"]))
        if device_type is None:
            errors.append(("type", f"No device type named {values['type']!r} in the site's organization."))
    gateway = None
    if values["gateway"]:
        gateway = catalogue.gateways.get(values["gateway"])
        if gateway is None:
            errors.append(("gateway", f"No gateway {values['gateway']!r} among your sites' gateways."))

    existing = catalogue.existing.get(uid)
    if existing is not None and (plan.mode == ImportMode.CREATE or existing.site_id not in catalogue.visible_site_ids):
        hint = " (import with mode=upsert to update it)" if existing.site_id in catalogue.visible_site_ids else ""
        errors.append(("uid", f"Device with this Device id already exists{hint}."))
    if errors:
        return errors

    device = (
        Device(uid=uid)
        if existing is None
        else Device(**{f.attname: getattr(existing, f.attname) for f in Device._meta.concrete_fields})
    )
    before = _written(device) if existing is not None else None
    device.name, device.site, device.device_type, device.gateway = values["name"], site, device_type, gateway
    device.tags, device.metadata = values["tags"], values["metadata"]
    try:
        # The admin's rules: field validators (id syntax, lengths, tag syntax) and Device.clean() (type of the
        # site's organization, gateway on the device's site). Uniqueness was checked against the whole table above.
        # The site, type and gateway are objects of the user's scope already: not checked again with a query each
        # (ForeignKey.validate), which was most of the time of a large import.
        device.full_clean(exclude=RESOLVED_FIELDS, validate_unique=False, validate_constraints=False)
    except ValidationError as error:
        return [
            (COLUMN_OF_FIELD.get(name, name), message)
            for name, messages in error.message_dict.items()
            for message in messages
        ]
    if existing is None:
        plan.creates.append(device)
        return []
    after = _written(device)
    changed = [name for name in after if after[name] != before[name]]
    if changed:
        plan.updates.append((device, {n: before[n] for n in changed}, {n: after[n] for n in changed}))
    else:
        plan.unchanged += 1
    return []


# ---------------------------------------------------------------------------------------------------------------------
# Applying
# ---------------------------------------------------------------------------------------------------------------------
def device_import_apply(*, plan: ImportPlan) -> dict:
    """Write a plan without errors in one transaction; return its summary. A device id created meanwhile by
    someone else fails the whole import (``RegistryConflict``): plan again."""
    if plan.errors:
        raise ValueError("A plan with errors is never applied.")
    try:
        with transaction.atomic():
            Device.objects.bulk_create(plan.creates, batch_size=BATCH_SIZE)
            Device.objects.bulk_update(
                [device for device, _, _ in plan.updates], fields=list(WRITTEN_FIELDS), batch_size=BATCH_SIZE
            )
            changes = [(device, None, _written(device)) for device in plan.creates]
            changes += plan.updates
            audit_many(actor=None, action=AuditAction.CONFIG_IMPORT, changes=changes)
            if changes:
                rows_bulk_changed.send(sender=Device)
    except IntegrityError:
        raise RegistryConflict(
            "Another change created or changed some of these devices meanwhile; nothing was imported. Try again."
        ) from None
    return plan.summary()


# ---------------------------------------------------------------------------------------------------------------------
# Exporting
# ---------------------------------------------------------------------------------------------------------------------
def device_export_row(device: Device) -> dict:
    """One device in the import's columns (its site, type and gateway loaded with it)."""
    return {
        "uid": device.uid,
        "name": device.name,
        "site": device.site.name,
        "type": device.device_type.name,
        "gateway": device.gateway.uid if device.gateway_id else "",
        "tags": TAG_SEPARATOR.join(device.tags),
        "metadata": json.dumps(device.metadata, sort_keys=True, ensure_ascii=False),
    }


class _Line:
    def write(self, text: str) -> str:
        return text


def devices_csv(devices: Iterable[Device]) -> Iterator[str]:
    """The CSV text of ``devices``, a line at a time (a header first), for a streaming response."""
    writer = csv.DictWriter(_Line(), fieldnames=IMPORT_COLUMNS)
    yield writer.writeheader()
    for device in devices:
        yield writer.writerow(device_export_row(device))
