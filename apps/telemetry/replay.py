"""Replaying dead letters: input refused once (an unknown device, a range too narrow) is handed to ingest again,
through the one service everything else uses, once the cause is fixed.

A letter keeps how it arrived (``DeadLetter.context``, written by ingest; an older MQTT letter's topic says as much),
so the replayed message is the one that was refused, read with today's catalogue and the gateway's current
settings. Letters of one message (one per refused record) are replayed as that one message, once. What ingest
refuses again is recorded on the letters (``replay_result``, ``replay_detail``) and nowhere else: no new letters,
discoveries or counts, so a replay can be repeated, and readings stored before are skipped as duplicates. A letter
cannot be replayed when its payload was kept truncated (``INGEST_DEAD_LETTER_PAYLOAD_BYTES``), when it is Sparkplug
B (its data depended on the node's birth state at the time), or when the key or gateway that sent it is gone.
"""

import datetime
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from apps.devices.models import Device, Gateway
from apps.telemetry.choices import IngestSource, RejectReason, ReplayResult
from apps.telemetry.ingest.dialects import sparkplug as sparkplug_topics
from apps.telemetry.ingest.directory import DeviceDirectory
from apps.telemetry.ingest.topics import parse_topic
from apps.telemetry.models import DeadLetter
from apps.telemetry.services import IngestBatch, IngestMessage, IngestOutcome

REPLAY_MAX_LETTERS = 10_000  # per call: a bigger backlog is replayed in several calls, oldest first
DETAIL_MAX_CHARS = 500


@dataclass
class ReplaySummary:
    """How many letters each result, and how many messages they made up."""

    letters: int = 0
    messages: int = 0
    results: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "letters": self.letters,
            "messages": self.messages,
            **{result.value: self.results[result] for result in ReplayResult},
        }


class NotReplayable(Exception):
    pass


def dead_letters_replay(*, letters: QuerySet, directory: DeviceDirectory | None = None) -> ReplaySummary:
    """Replay the oldest ``REPLAY_MAX_LETTERS`` of ``letters`` (already scoped to what the caller may replay)
    through ingest, recording each letter's result; see the module docstring."""
    letters = list(letters.order_by("received_at", "id")[:REPLAY_MAX_LETTERS])
    summary = ReplaySummary(letters=len(letters))
    directory = directory or DeviceDirectory()
    groups = _messages_of(letters)
    summary.messages = len(groups)
    now = timezone.now()
    # The gateways HTTP letters name, in one query (their current site and dialect settings apply).
    named = {(letter.context or {}).get("gateway") for letter in letters if letter.source == IngestSource.HTTP}
    gateways = {gateway.uid: gateway for gateway in Gateway.objects.filter(uid__in=named - {None})}
    replayable = []
    for group in groups:
        try:
            replayable.append((group, _message(group[0], gateways)))
        except NotReplayable as reason:
            _record(group, ReplayResult.NOT_REPLAYABLE, str(reason), now)
    for start in range(0, len(replayable), settings.INGEST_FLUSH_MESSAGES):
        chunk = replayable[start : start + settings.INGEST_FLUSH_MESSAGES]
        batch = IngestBatch(directory, keep_refusals=False)
        for _, message in chunk:
            batch.add(message)
        result = batch.commit()
        for (group, _), outcome in zip(chunk, result.outcomes, strict=True):
            _record(group, *_result_of(outcome), now)
    DeadLetter.objects.bulk_update(letters, ["replayed_at", "replay_result", "replay_detail"], batch_size=1000)
    summary.results.update(letter.replay_result for letter in letters)
    return summary


def adopted_devices_replay(*, devices: Iterable[Device]) -> ReplaySummary:
    """Replay what newly registered (adopted) devices sent while unknown: the ``unknown_device`` letters naming
    them that their sites' senders received."""
    devices = list(devices)
    letters = DeadLetter.objects.filter(
        site__in={device.site_id for device in devices},
        device_uid__in=[device.uid for device in devices],
        reason=RejectReason.UNKNOWN_DEVICE,
    )
    return dead_letters_replay(letters=letters)


def _messages_of(letters: Iterable[DeadLetter]) -> list[list[DeadLetter]]:
    """The letters grouped by the message they came from (same arrival, sender and payload), in arrival order."""
    groups: dict[tuple, list[DeadLetter]] = {}
    for letter in letters:
        key = (letter.received_at, letter.source, letter.origin, bytes(letter.payload))
        groups.setdefault(key, []).append(letter)
    return list(groups.values())


def _message(letter: DeadLetter, gateways: dict[str, Gateway]) -> IngestMessage:
    """The message a letter was refused from, as ingest first saw it; raises NotReplayable."""
    payload = bytes(letter.payload)
    if len(payload) < letter.payload_size:
        raise NotReplayable(
            f"its payload was kept truncated ({len(payload)} of {letter.payload_size} bytes; "
            "INGEST_DEAD_LETTER_PAYLOAD_BYTES bounds what is kept)"
        )
    context = letter.context or {}
    if context.get("dialect") == "sparkplug" or sparkplug_topics.is_sparkplug(letter.origin):
        raise NotReplayable("Sparkplug B data depends on the edge node's birth state when it was sent")
    common = {
        "source": letter.source,
        "payload": payload,
        "received_at": letter.received_at,
        "origin": letter.origin,
        "dialect": context.get("dialect", ""),
        "attributes": bool(context.get("attributes")),
    }
    if letter.source == IngestSource.MQTT:
        if context:
            return IngestMessage(**common, device_uid=context.get("device"), gateway_uid=context.get("gateway"))
        target = parse_topic(letter.origin, settings.MQTT_TOPIC_PREFIX)  # a letter from before contexts were kept
        if target is None:
            raise NotReplayable("its topic is not a telemetry topic")
        return IngestMessage(
            **{**common, "attributes": target.attributes}, device_uid=target.device_uid, gateway_uid=target.gateway_uid
        )
    if "device" in context:  # a device's own HTTP endpoint (ThingsBoard's): the token named the device
        return IngestMessage(**common, device_uid=context["device"], max_bytes=settings.INGEST_HTTP_MAX_BYTES)
    if "gateway" not in context:
        raise NotReplayable("it was kept before dead letters recorded their sender")
    gateway = gateways.get(context["gateway"])
    if gateway is None:
        raise NotReplayable(f"its gateway {context['gateway']!r} no longer exists")
    return IngestMessage(
        **common,
        gateway_uid=gateway.uid,
        gateway_site_id=gateway.site_id,
        max_bytes=settings.INGEST_HTTP_MAX_BYTES,
        options={**context.get("options", {}), **gateway.dialect_options()},
    )


def _result_of(outcome: IngestOutcome) -> tuple[ReplayResult, str]:
    if outcome.rejection is not None:
        return ReplayResult.REFUSED, f"{outcome.rejection.reason}: {outcome.rejection.detail}"
    if not outcome.rejected:
        return ReplayResult.STORED, f"{outcome.accepted} readings accepted (those stored before are kept once)"
    first = outcome.errors[0] if outcome.errors else None
    reason = f"; first: record {first.index}, {first.reason}: {first.detail}" if first else ""
    result = ReplayResult.PARTLY if outcome.accepted else ReplayResult.REFUSED
    return result, f"{outcome.accepted} accepted, {outcome.rejected} refused{reason}"


def _record(group: list[DeadLetter], result: ReplayResult, detail: str, at: datetime.datetime) -> None:
    for letter in group:
        letter.replayed_at = at
        letter.replay_result = result
        letter.replay_detail = detail[:DETAIL_MAX_CHARS]
