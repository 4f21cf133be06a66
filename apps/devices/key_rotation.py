"""Gateway API key rotation: manual rotation with a grace period, and the periodic job that asks for it.

Design: the plaintext of a key exists only in the return value of ``api_key_issue`` and is never persisted
(encrypted or not). A successor issued by a beat job would therefore be a key nobody can ever read, so the job
does not issue successors. Instead it

1. marks keys older than ``API_KEY_ROTATE_AFTER_DAYS`` that have no successor as *due* (``rotation_due_at``) and
   emails the organization's admins how to rotate them (admin action "Rotate selected keys" or
   ``POST /api/v1/api-keys/<prefix>/rotate``), which shows the successor's plaintext once to that person; a
   reminder follows every ``API_KEY_ROTATION_GRACE_DAYS`` while the key is still due;
2. revokes every key whose successor has existed for ``API_KEY_ROTATION_GRACE_DAYS``.

Rotating (``api_key_rotate``) issues the successor linked by ``replaces`` and caps the old key's expiry at
now + grace, so the old key stops working on time even if the job is late; the job's revocation then records it.
"""

import datetime
import logging
from collections import defaultdict

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.core.audit import BEAT_ACTOR, AuditAction, audit
from apps.devices.models import ApiKey
from apps.devices.services import api_key_issue
from apps.users.choices import Role

logger = logging.getLogger(__name__)


class KeyNotRotatable(Exception):
    """The key already has a successor, or is revoked or expired (issue a new key instead)."""


def _grace() -> datetime.timedelta:
    return datetime.timedelta(days=settings.API_KEY_ROTATION_GRACE_DAYS)


@transaction.atomic
def api_key_rotate(*, api_key: ApiKey, name: str | None = None) -> tuple[ApiKey, str]:
    """Issue a successor of ``api_key``; return ``(successor, plaintext)``. The old key works for the grace period.

    The old row is locked so two concurrent rotations cannot both issue a successor (``replaces`` is one-to-one
    too, but the lock turns the race into a clear error instead of an IntegrityError).
    """
    now = timezone.now()
    old = ApiKey.objects.select_for_update().get(pk=api_key.pk)
    if ApiKey.objects.filter(replaces=old).exists():
        raise KeyNotRotatable(f"fwk_{old.prefix}… already has a successor.")
    if not old.is_usable(now):
        raise KeyNotRotatable(f"fwk_{old.prefix}… is revoked or expired; issue a new key instead.")
    successor, plaintext = api_key_issue(gateway=old.gateway, name=old.name if name is None else name, replaces=old)
    grace_end = now + _grace()
    if old.expires_at is None or old.expires_at > grace_end:
        old.expires_at = grace_end
        old.save(update_fields=["expires_at"])
    api_key.refresh_from_db()
    return successor, plaintext


def _organization_admin_emails(organization_id: int) -> list[str]:
    from apps.users.models import User

    admins = User.objects.filter(organization_id=organization_id, groups__name=Role.ADMIN, is_active=True)
    return sorted(set(admins.exclude(email="").values_list("email", flat=True)))


def _notify_due(organization_id: int, keys: list[ApiKey]) -> None:
    recipients = _organization_admin_emails(organization_id)
    if not recipients:
        logger.warning("Keys due for rotation in organization %s, which has no admin with an email", organization_id)
        return
    grace_days = settings.API_KEY_ROTATION_GRACE_DAYS
    lines = [
        f"- fwk_{key.prefix}… of gateway {key.gateway.name} ({key.gateway.uid}) on site {key.gateway.site.name}, "
        f"issued {key.created_at:%Y-%m-%d}"
        for key in keys
    ]
    body = "\n".join(
        [
            f"These gateway API keys are older than {settings.API_KEY_ROTATE_AFTER_DAYS} days and should be rotated:",
            "",
            *lines,
            "",
            "To rotate a key, either select it in the admin (API keys) and run the action "
            "'Rotate selected keys (issue replacements)', or call POST /api/v1/api-keys/<prefix>/rotate.",
            "The new key is shown once, to you, at that moment: Fieldwatch does not store it and will never email it.",
            "Install the new key on the gateway (X-API-Key header). The old key keeps working for "
            f"{grace_days} days after the new one is issued, then it is revoked.",
        ]
    )
    send_mail(
        subject=f"[Fieldwatch] {len(keys)} gateway API key(s) due for rotation",
        message=body,
        from_email=None,
        recipient_list=recipients,
    )


def api_keys_mark_due(*, now: datetime.datetime | None = None) -> int:
    """Mark old keys without a successor as due and email each organization's admins once per grace period.

    Each key is claimed with a conditional UPDATE, so two overlapping runs never notify twice; the claim and the
    email share a transaction, so a failed email is retried by the next run.
    """
    now = now or timezone.now()
    age_limit = now - datetime.timedelta(days=settings.API_KEY_ROTATE_AFTER_DAYS)
    not_recently_notified = Q(rotation_due_at__isnull=True) | Q(rotation_due_at__lte=now - _grace())
    candidates = (
        ApiKey.objects.usable(now)
        .filter(created_at__lte=age_limit, replaced_by__isnull=True)
        .filter(not_recently_notified)
        .select_related("gateway__site")
        .order_by("gateway__site__organization_id", "created_at")
    )
    by_organization: dict[int, list[ApiKey]] = defaultdict(list)
    for key in candidates:
        by_organization[key.gateway.site.organization_id].append(key)
    marked = 0
    for organization_id, keys in by_organization.items():
        with transaction.atomic():
            claimed = [
                key
                for key in keys
                if ApiKey.objects.filter(not_recently_notified, pk=key.pk).update(rotation_due_at=now) == 1
            ]
            if claimed:
                _notify_due(organization_id, claimed)
        marked += len(claimed)
    return marked


def api_keys_revoke_replaced(*, now: datetime.datetime | None = None) -> int:
    """Revoke every key whose successor was issued at least the grace period ago; return how many.

    The rows are locked and read first so each revocation is audited (as the ``beat`` actor) in the same
    transaction; there are few per run.
    """
    now = now or timezone.now()
    with transaction.atomic():
        keys = list(
            ApiKey.objects.select_for_update(of=("self",))
            .filter(revoked_at__isnull=True, replaced_by__created_at__lte=now - _grace())
            .select_related("gateway__site")
        )
        ApiKey.objects.filter(pk__in=[key.pk for key in keys]).update(revoked_at=now)
        for key in keys:
            audit(actor=BEAT_ACTOR, action=AuditAction.KEY_REVOKE, target=key, after={"prefix": key.prefix})
    return len(keys)


def api_keys_rotation_run(*, now: datetime.datetime | None = None) -> dict[str, int]:
    """The periodic job: ask for due rotations, then retire keys past their grace period."""
    now = now or timezone.now()
    return {"marked_due": api_keys_mark_due(now=now), "revoked": api_keys_revoke_replaced(now=now)}
