from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from apps.core.audit import AuditAction


class AuditEvent(models.Model):
    """One thing somebody (or a job) did: who, what, when, from where, to which object, and for configuration
    changes the changed fields before and after. Append-only; purged after ``AUDIT_RETENTION_DAYS``.

    Actor, target and organization are kept as labels too (``actor_label``, ``target_repr``), and the foreign keys
    are ``SET_NULL``/plain ids, so an event still says who and what after the user or the object is deleted.
    ``organization`` scopes the admin: an organization admin sees only the events of their organization.
    """

    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    action = models.CharField(max_length=32, choices=AuditAction.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=150, help_text="The username at the time, or 'system' / 'beat'.")
    ip = models.GenericIPAddressField(null=True, blank=True, verbose_name="IP address")
    organization = models.ForeignKey(
        "users.Organization", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    target_type = models.ForeignKey(ContentType, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True, verbose_name="target")
    before = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    after = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["target_type", "target_id"], name="audit_target_idx"),
            models.Index(fields=["organization", "-occurred_at"], name="audit_org_time_idx"),
        ]

    def __str__(self):
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action} {self.target_repr}".strip()
