"""The audit log listens; nobody imports it (the app order's one exception, see docs/architecture.md):

* events the other apps ask for with ``apps.core.audit.audit`` (keys, tokens, alerts, exports, ...);
* logins, logouts and failed logins, from django.contrib.auth's signals (admin, dashboard, any ``authenticate``);
* configuration changes of the models below: the row as it is in the database before ``save()`` (pre_save) and
  the instance after it (post_save), reduced to the changed fields; creations and deletions.

High-volume tables (readings, latest values, series, dead letters, alerts changed by ingest) are deliberately not
connected; the ingest writer's ``last_seen`` updates are plain SQL and never reach these receivers, and a save
that touches only ``last_seen`` is ignored all the same (``apps.core.signals``).
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_delete, post_save, pre_save

from apps.alerts.models import AlertRule, EscalationPolicy, NotificationChannel
from apps.audit.services import audit_record, audit_record_many, changed_fields, model_snapshot
from apps.core.audit import AuditAction, audit_many_requested, audit_requested
from apps.core.security import client_ip
from apps.core.signals import saves_only_ingest_fields
from apps.devices.models import Device, DeviceType, Gateway, MetricDefinition, Site

CONFIGURATION_MODELS = (
    Site,
    DeviceType,
    MetricDefinition,
    Device,
    Gateway,
    AlertRule,
    EscalationPolicy,
    NotificationChannel,
)


# ---------------------------------------------------------------------------------------------------------------------
# Events the apps ask for
# ---------------------------------------------------------------------------------------------------------------------
def record_requested(sender, signal, **event):
    audit_record(**event)  # the keywords of apps.core.audit.audit


audit_requested.connect(record_requested, dispatch_uid="audit-requested")


def record_many_requested(sender, signal, **batch):
    audit_record_many(**batch)  # the keywords of apps.core.audit.audit_many


audit_many_requested.connect(record_many_requested, dispatch_uid="audit-many-requested")


# ---------------------------------------------------------------------------------------------------------------------
# Authentication
# ---------------------------------------------------------------------------------------------------------------------
def record_login(sender, request, user, **kwargs):
    audit_record(actor=user, action=AuditAction.LOGIN, target=user, request=request)


def record_logout(sender, request, user, **kwargs):
    if user is not None:  # logging out without a session still fires the signal
        audit_record(actor=user, action=AuditAction.LOGOUT, target=user, request=request)


def record_login_failed(sender, credentials, request=None, **kwargs):
    """The attempted username is kept as given (Django already masks the password); no target is named, so the
    log does not say whether the account exists, but the event is scoped to its organization when it does."""
    username = str(credentials.get("username", ""))[:150]
    user = get_user_model()._default_manager.filter(username=username).only("organization_id").first()
    audit_record(
        actor=f"anonymous ({username})" if username else "anonymous",
        action=AuditAction.LOGIN_FAILED,
        after={"username": username},
        request=request,
        ip=client_ip(request) if request is not None else None,
        organization_id=user.organization_id if user is not None else None,
    )


user_logged_in.connect(record_login, dispatch_uid="audit-login")
user_logged_out.connect(record_logout, dispatch_uid="audit-logout")
user_login_failed.connect(record_login_failed, dispatch_uid="audit-login-failed")


# ---------------------------------------------------------------------------------------------------------------------
# Configuration changes
# ---------------------------------------------------------------------------------------------------------------------
def capture_before(sender, instance, raw=False, update_fields=None, **kwargs):
    """Read the row as stored (one query per update of a configuration object; they are rare and human-made)."""
    if raw or instance._state.adding or instance.pk is None or saves_only_ingest_fields(update_fields):
        return
    stored = sender._base_manager.filter(pk=instance.pk).first()
    instance._audit_before = model_snapshot(stored) if stored is not None else None


def record_save(sender, instance, created, raw=False, update_fields=None, **kwargs):
    if raw or saves_only_ingest_fields(update_fields):
        return
    after = model_snapshot(instance)
    if created:
        audit_record(actor=None, action=AuditAction.CONFIG_CREATE, target=instance, after=after)
        return
    before = instance.__dict__.pop("_audit_before", None)
    if before is None:
        return
    before, after = changed_fields(before, after)
    if after:
        audit_record(actor=None, action=AuditAction.CONFIG_CHANGE, target=instance, before=before, after=after)


def record_delete(sender, instance, origin=None, **kwargs):
    audit_record(actor=None, action=AuditAction.CONFIG_DELETE, target=instance, before=model_snapshot(instance))


for model in CONFIGURATION_MODELS:
    pre_save.connect(capture_before, sender=model, dispatch_uid=f"audit-before-{model.__name__}")
    post_save.connect(record_save, sender=model, dispatch_uid=f"audit-save-{model.__name__}")
    post_delete.connect(record_delete, sender=model, dispatch_uid=f"audit-delete-{model.__name__}")
