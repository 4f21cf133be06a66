"""Escalation: chase an unacknowledged alert up its rule's escalation policy, one step at a time.

An open alert carries its next step (``next_escalation_position``) and when it is due (``next_escalation_at``).
``escalations_start`` sets the first step when alerts open; acknowledging or resolving clears
``next_escalation_at`` (and only ``active`` alerts escalate), which stops the chase.

``escalations_run`` is the beat job (every 10 s). Several workers, or a late beat tick overlapping the next, may
run it at the same time, so each due step is *claimed* with a conditional UPDATE that moves the alert to its next
step only if it still sits on the step we read (Healthchecks' ``sendalerts``). Exactly one caller sees a row count
of 1 and creates that step's deliveries, in the same transaction as the claim: a crash between the two rolls both
back and the step is claimed again on the next run. ``Delivery``'s unique constraint (alert, step, kind, target)
backs this up in the database.

Nothing here enqueues Celery work itself: the interfaces (``apps.alerts.tasks``, ``apps.alerts.receivers``) pass
``enqueue_deliveries`` in and kick runs when ``escalations_start`` says a step is due, so the tasks module can
import this one and not the other way round.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from apps.alerts.choices import AlertEventKind, AlertStatus, ChannelKind
from apps.alerts.models import Alert, AlertEvent, Delivery, EscalationStep
from apps.alerts.notifications import email_addresses

logger = logging.getLogger(__name__)

# Due alerts handled per run; anything beyond waits for the next tick (10 s) rather than making one run unbounded.
ESCALATION_BATCH = 500

# ---------------------------------------------------------------------------------------------------------------------
# Starting
# ---------------------------------------------------------------------------------------------------------------------


# The first step of each new alert's policy (lowest position), in one statement for any number of alerts; alerts whose
# rule has no policy, or a policy without steps, are left alone and never escalate.
_START = """
    UPDATE alerts_alert a
    SET next_escalation_position = step1.position, next_escalation_at = a.opened_at + step1.delay
    FROM alerts_alertrule r
    CROSS JOIN LATERAL (
        SELECT s.position, s.delay FROM alerts_escalationstep s
        WHERE s.policy_id = r.escalation_policy_id
        ORDER BY s.position LIMIT 1
    ) step1
    WHERE a.id = ANY(%s) AND r.id = a.rule_id AND r.escalation_policy_id IS NOT NULL
    RETURNING a.next_escalation_at
"""


def escalations_start(*, alert_ids: list[int]) -> bool:
    """Point newly opened alerts at the first step of their rule's escalation policy; True when a first step is due
    already (delay 0), so the caller should kick a run rather than wait for the next beat tick.

    Called inside the transaction that opens the alerts.
    """
    with connection.cursor() as cursor:
        cursor.execute(_START, [list(alert_ids)])
        due_at = [row[0] for row in cursor.fetchall()]
    now = timezone.now()
    return any(at <= now for at in due_at)


# ---------------------------------------------------------------------------------------------------------------------
# Running due steps
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    kind: str
    target: str
    channel_id: int | None = None
    user_id: int | None = None
    label: str = ""


def _step_targets(step: EscalationStep) -> list[_Target]:
    """Who a step notifies: each active channel, then each user by email unless a channel already mails them."""
    targets: list[_Target] = []
    mailed: set[str] = set()
    for channel in step.channels.all():  # prefetched
        if not channel.is_active:
            continue
        if channel.kind == ChannelKind.EMAIL:
            addresses = email_addresses(channel.email_to)
            if addresses:
                targets.append(
                    _Target(ChannelKind.EMAIL, ", ".join(addresses), channel_id=channel.pk, label=channel.name)
                )
                mailed.update(address.lower() for address in addresses)
        elif channel.kind == ChannelKind.WEBHOOK and channel.webhook_url:
            targets.append(_Target(ChannelKind.WEBHOOK, channel.webhook_url, channel_id=channel.pk, label=channel.name))
    for user in step.users.all():  # prefetched
        if user.is_active and user.email and user.email.lower() not in mailed:
            targets.append(_Target(ChannelKind.EMAIL, user.email, user_id=user.pk, label=user.get_username()))
            mailed.add(user.email.lower())
    return targets


def escalations_run(*, enqueue_deliveries: Callable[[list[int]], object], now: datetime | None = None) -> dict:
    """Run every due escalation step of every active alert once; return counts for the worker log.

    ``enqueue_deliveries(delivery_ids)`` is called after each claimed step commits (the Celery task passes one that
    queues a send per delivery).

    Three queries find the work (due alerts, their policies' steps with channels and users); then each alert costs
    one claim UPDATE plus two INSERTs (deliveries, history event), each alert in its own short transaction so one
    alert's failure cannot hold back the others.
    """
    now = now or timezone.now()
    due = list(
        Alert.objects.filter(
            status=AlertStatus.ACTIVE, next_escalation_at__lte=now, next_escalation_position__isnull=False
        )
        .order_by("next_escalation_at")
        .values("id", "opened_at", "next_escalation_position", "rule__escalation_policy_id")[:ESCALATION_BATCH]
    )
    if not due:
        return {"due": 0, "claimed": 0, "deliveries": 0}

    policy_ids = {row["rule__escalation_policy_id"] for row in due} - {None}
    steps_by_policy: dict[int, list[EscalationStep]] = {}
    for step in (
        EscalationStep.objects.filter(policy_id__in=policy_ids)
        .order_by("policy_id", "position")
        .prefetch_related("channels", "users")
    ):
        steps_by_policy.setdefault(step.policy_id, []).append(step)

    claimed = deliveries = 0
    for row in due:
        steps = steps_by_policy.get(row["rule__escalation_policy_id"], [])
        created = _escalation_step_run(row, steps, now, enqueue_deliveries)
        if created is not None:
            claimed += 1
            deliveries += created
    if claimed:
        logger.info("escalations: %d due, %d steps claimed, %d deliveries queued", len(due), claimed, deliveries)
    return {"due": len(due), "claimed": claimed, "deliveries": deliveries}


def _escalation_step_run(row: dict, steps: list[EscalationStep], now: datetime, enqueue_deliveries) -> int | None:
    """Claim and run one alert's due step; return how many deliveries it queued, or None if another run had it."""
    position = row["next_escalation_position"]
    # The policy may have been edited since the alert opened: a deleted step is skipped (claimed, nothing sent),
    # a removed policy ends the chase.
    step = next((s for s in steps if s.position == position), None)
    following = next((s for s in steps if s.position > position), None)
    with transaction.atomic():
        won = Alert.objects.filter(
            id=row["id"], status=AlertStatus.ACTIVE, next_escalation_position=position, next_escalation_at__lte=now
        ).update(
            next_escalation_position=following.position if following else None,
            next_escalation_at=row["opened_at"] + following.delay if following else None,
        )
        if not won:
            return None  # acknowledged, resolved or cleared meanwhile, or another worker claimed this step
        if step is None:
            return 0
        targets = _step_targets(step)
        created = Delivery.objects.bulk_create(
            Delivery(
                alert_id=row["id"],
                step=step,
                channel_id=target.channel_id,
                user_id=target.user_id,
                kind=target.kind,
                target=target.target[:500],
            )
            for target in targets
        )
        summary = "; ".join(f"{t.kind} {t.label} ({t.target})" for t in targets) or "nobody to notify"
        AlertEvent.objects.create(
            alert_id=row["id"], kind=AlertEventKind.ESCALATED, at=now, note=f"step {position}: {summary}"
        )
        delivery_ids = [delivery.pk for delivery in created]
        transaction.on_commit(lambda: enqueue_deliveries(delivery_ids))
    return len(delivery_ids)
