"""What every app needs to have an action audited, without importing the audit app.

Apps below the audit log (users, devices, telemetry, alerts) say *that* something happened with ``audit(...)``;
the audit app (``apps.audit.receivers``) decides how it is stored. ``audit`` sends a plain (not robust) signal, so the
event is written inside the caller's transaction and a failure to write it fails the change it records, as it
did when callers wrote the row themselves.

Also here because signal receivers, jobs and middleware on every layer share them: the vocabulary of actions, the
actor markers for work without a user, and the request/actor context.

The context is a ``contextvars.ContextVar``, not a thread-local. Receivers of configuration changes saved by the
admin, a DRF view or a form get no request argument, yet an event must say who and from where;
``AuditContextMiddleware`` puts the current request into the context for the duration of the view and resets it
afterwards. Under ASGI each request runs in its own context (asyncio tasks copy it, asgiref's ``sync_to_async`` /
``async_to_sync`` carry it to the thread that runs sync code), so two concurrent requests never see each other's
request, and the ``finally`` reset keeps anything from leaking into the next one.
"""

import contextlib
from contextvars import ContextVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.db import models
from django.dispatch import Signal


class AuditAction(models.TextChoices):
    """What happened. Dotted codes group by area, so ``action__startswith="key."`` finds every key event."""

    LOGIN = "login", "Login"
    LOGOUT = "logout", "Logout"
    LOGIN_FAILED = "login.failed", "Login failed"
    CONFIG_CREATE = "config.create", "Configuration created"
    CONFIG_CHANGE = "config.change", "Configuration changed"
    CONFIG_DELETE = "config.delete", "Configuration deleted"
    ALERT_ACKNOWLEDGE = "alert.acknowledge", "Alert acknowledged"
    ALERT_RESOLVE = "alert.resolve", "Alert resolved"
    KEY_ISSUE = "key.issue", "Gateway API key issued"
    KEY_ROTATE = "key.rotate", "Gateway API key rotated"
    KEY_REVOKE = "key.revoke", "Gateway API key revoked"
    TOKEN_CREATE = "token.create", "API token created"
    TOKEN_REVOKE = "token.revoke", "API token revoked"
    MQTT_CREDENTIAL_ISSUE = "mqtt.issue", "MQTT credential issued"
    MQTT_CREDENTIAL_REVOKE = "mqtt.revoke", "MQTT credential revoked"
    ACCESS_TOKEN_ISSUE = "access-token.issue", "Access token (ThingsBoard) issued"
    ACCESS_TOKEN_REVOKE = "access-token.revoke", "Access token (ThingsBoard) revoked"
    EXPORT_CREATE = "export.create", "Export created"
    CONFIG_IMPORT = "config.import", "Configuration imported"
    DEVICE_AUTO_REGISTER = "config.auto-register", "Device auto-registered by its gateway"
    TWO_FACTOR_ENROL = "2fa.enrol", "Two-factor device enrolled"
    TWO_FACTOR_FAILED = "2fa.failed", "Two-factor code refused"
    TWO_FACTOR_REMOVE = "2fa.remove", "Two-factor device removed"


# Actors that are not users: recorded in ``actor_label`` with ``actor`` empty.
SYSTEM_ACTOR = "system"  # no request and no explicit actor (a management command, a shell)
BEAT_ACTOR = "beat"  # a periodic job

# Sent by ``audit``; keyword arguments as ``audit`` takes them. The audit app connects the one receiver.
audit_requested = Signal()
# Sent by ``audit_many``: ``actor``, ``action`` and ``changes``, a list of ``(target, before, after)``.
audit_many_requested = Signal()


def audit(
    *,
    actor,
    action: str,
    target: models.Model | None = None,
    before: dict | None = None,
    after: dict | None = None,
    request=None,
    ip: str | None = None,
    organization_id: int | None = None,
) -> None:
    """Have one event recorded in the caller's transaction (rolled back with the change it records).

    ``actor`` is a user, a marker string (``BEAT_ACTOR``, ``SYSTEM_ACTOR``) or None for "whoever made the current
    request"; ``request`` defaults to the current request, which also gives the IP unless ``ip`` is passed.
    ``target`` is any model instance; its organization scopes the event. Secrets in ``before``/``after`` are
    redacted by the recorder.
    """
    audit_requested.send(
        sender=type(target) if target is not None else None,
        actor=actor,
        action=action,
        target=target,
        before=before,
        after=after,
        request=request,
        ip=ip,
        organization_id=organization_id,
    )


def audit_many(*, actor, action: str, changes: list[tuple[models.Model, dict | None, dict | None]]) -> None:
    """Have one event per ``(target, before, after)`` recorded in the caller's transaction, written set-based:
    what a bulk write (an import of thousands of devices) records, each row's change as ``audit`` would."""
    if changes:
        audit_many_requested.send(sender=None, actor=actor, action=action, changes=changes)


# ---------------------------------------------------------------------------------------------------------------------
# The request (or job) an event belongs to
# ---------------------------------------------------------------------------------------------------------------------
_current_request: ContextVar = ContextVar("audit_current_request", default=None)
_current_actor: ContextVar = ContextVar("audit_current_actor", default=None)


def current_request():
    return _current_request.get()


def current_actor():
    """An explicit actor set by ``audit_actor`` (a user or a marker string), else None."""
    return _current_actor.get()


@contextlib.contextmanager
def audit_actor(actor):
    """Attribute events recorded inside the block to ``actor`` (a user, or a marker such as ``BEAT_ACTOR``)."""
    token = _current_actor.set(actor)
    try:
        yield
    finally:
        _current_actor.reset(token)


class AuditContextMiddleware:
    """Expose the current request to audit recording (see the module docstring). Sync and async capable."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        token = _current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _current_request.reset(token)

    async def __acall__(self, request):
        token = _current_request.set(request)
        try:
            return await self.get_response(request)
        finally:
            _current_request.reset(token)
