"""Writing and purging audit events. ``audit_record`` is the one way an event is written; other apps reach it
through ``apps.core.audit.audit`` (see ``apps.audit.receivers``)."""

import datetime
import json

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.core.audit import SYSTEM_ACTOR, current_actor, current_request
from apps.core.retention import rows_purge
from apps.core.security import client_ip

# Fields whose values never go into the log (secrets); a change to them is recorded as "<changed>".
REDACTED_FIELDS = frozenset({"password", "key_hash", "password_hash", "webhook_secret", "secret"})
REDACTED = "<redacted>"

# Where a target's organization is found, tried in order (attribute paths, each step one related object).
_ORGANIZATION_PATHS = (
    ("organization_id",),
    ("site", "organization_id"),
    ("device_type", "organization_id"),
    ("gateway", "site", "organization_id"),
    ("device", "site", "organization_id"),
    ("user", "organization_id"),
)


def _organization_id(target, actor) -> int | None:
    if target is not None:
        for path in _ORGANIZATION_PATHS:
            value = target
            for attribute in path:
                value = getattr(value, attribute, None)
                if value is None:
                    break
            if value is not None:
                return value
    return getattr(actor, "organization_id", None)


def _resolve_actor(actor, request):
    """``(user or None, label)``: an explicit actor wins, then ``audit_actor(...)``, then the request's user."""
    if actor is None:
        actor = current_actor()
    if actor is None and request is not None:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            actor = user
    if actor is None:
        return None, SYSTEM_ACTOR
    if isinstance(actor, str):
        return None, actor
    return actor, actor.get_username()


def to_json(values: dict | None) -> dict | None:
    """JSON-ready copy (datetimes, durations, decimals, UUIDs as DjangoJSONEncoder writes them), secrets redacted.

    Anything else the encoder does not know is kept as its ``str()``: the log must never fail the change it records.
    """
    if values is None:
        return None
    return {name: REDACTED if name in REDACTED_FIELDS else _json_value(value) for name, value in values.items()}


class _Encoder(DjangoJSONEncoder):
    def default(self, o):
        try:
            return super().default(o)
        except TypeError:
            return str(o)


def _json_value(value):
    return json.loads(json.dumps(value, cls=_Encoder))


def model_snapshot(instance: models.Model) -> dict:
    """The instance's editable concrete fields (foreign keys as ids), JSON-ready: the "before"/"after" of a change.

    Many-to-many fields are left out: ``save()`` does not write them, so they would never differ here.
    """
    values = {
        field.attname if field.is_relation else field.name: field.value_from_object(instance)
        for field in instance._meta.concrete_fields
        if field.editable and not field.primary_key
    }
    # Not redacted yet: a change of a secret must still be seen as a change; audit_record redacts what it stores.
    return {name: _json_value(value) for name, value in values.items()}


def changed_fields(before: dict, after: dict) -> tuple[dict, dict]:
    """Only what differs: ``(before, after)`` restricted to the fields whose JSON values changed."""
    names = [name for name in after.keys() | before.keys() if before.get(name) != after.get(name)]
    names.sort()
    return {name: before.get(name) for name in names}, {name: after.get(name) for name in names}


def audit_record(
    *,
    actor,
    action: str,
    target: models.Model | None = None,
    before: dict | None = None,
    after: dict | None = None,
    request=None,
    ip: str | None = None,
    organization_id: int | None = None,
) -> AuditEvent:
    """Write one audit event in the caller's transaction (it is rolled back with the change it records).

    ``actor`` is a user, a marker string (``"beat"``, ``"system"``) or None for "whoever made the current request"
    (see apps.core.audit); ``request`` defaults to the current request, which also gives the IP unless ``ip`` is
    passed. ``target`` is any model instance; its organization scopes the event in the admin.
    """
    request = request if request is not None else current_request()
    user, label = _resolve_actor(actor, request)
    if ip is None and request is not None:
        ip = client_ip(request)
    event = AuditEvent(
        action=action,
        actor=user,
        actor_label=label[:150],
        ip=ip,
        organization_id=organization_id if organization_id is not None else _organization_id(target, user),
        before=to_json(before),
        after=to_json(after),
    )
    if target is not None:
        event.target_type = ContentType.objects.get_for_model(target, for_concrete_model=False)
        event.target_id = str(target.pk)
        event.target_repr = str(target)[:200]
    event.save()
    return event


def audit_record_many(*, actor, action: str, changes: list, batch_size: int = 1000) -> int:
    """One event per ``(target, before, after)`` of ``changes``, as ``audit_record`` writes them, in one
    ``bulk_create`` per batch instead of one INSERT each (an import's thousands of rows); return how many."""
    request = current_request()
    user, label = _resolve_actor(actor, request)
    ip = client_ip(request) if request is not None else None
    events = []
    for target, before, after in changes:
        events.append(
            AuditEvent(
                action=action,
                actor=user,
                actor_label=label[:150],
                ip=ip,
                organization_id=_organization_id(target, user),
                target_type=ContentType.objects.get_for_model(target, for_concrete_model=False),
                target_id=str(target.pk),
                target_repr=str(target)[:200],
                before=to_json(before),
                after=to_json(after),
            )
        )
    AuditEvent.objects.bulk_create(events, batch_size=batch_size)
    return len(events)


def audit_events_purge(*, now: datetime.datetime | None = None, batch_size: int = 5000, max_batches: int = 1000) -> int:
    """Delete events older than ``AUDIT_RETENTION_DAYS`` in bounded batches (``rows_purge``); return how many."""
    cutoff = (now or timezone.now()) - datetime.timedelta(days=settings.AUDIT_RETENTION_DAYS)
    return rows_purge(AuditEvent.objects.filter(occurred_at__lt=cutoff), batch_size=batch_size, max_batches=max_batches)
