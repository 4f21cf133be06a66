"""Sparkplug B edge nodes' birth state for ingest: in memory per listener, persisted with the batch that changed it.

The parser (``apps.telemetry.ingest.dialects.sparkplug``) reads each message against its edge node's ``NodeState``
and returns the next one. Here:

* ``SparkplugNodes`` is a listener's store of committed states, loaded from ``SparkplugNode`` once per process (at
  the first batch, where a batch may query) and updated after each commit. It also rate-limits rebirth requests.
* ``SparkplugBatch`` is one ingest batch's view: the states its messages changed, layered over the store, so the
  second message of a batch sees what the first one's birth defined. ``persist`` runs inside the batch's
  transaction (the writer's ``also``): births and deaths write the whole state, data only the sequence number, and
  devices that died get ``offline_since``. So a birth is acknowledged (MQTT PUBACK) only once its aliases are
  committed; if the transaction fails, the store is unchanged and the redelivered birth is read again.

Per-node order matters (sequence numbers, a death after its data): one listener must consume an edge node's messages.
With several listeners in a shared-subscription group the broker spreads one node's messages over them; each then
sees gaps and requests rebirths (docs/sparkplug.md).
"""

import datetime
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from apps.core.time import epoch_ms
from apps.devices.models import Device
from apps.telemetry.ingest.dialects import sparkplug
from apps.telemetry.ingest.dialects.sparkplug import NodeState, SparkplugEffect, UidTemplates
from apps.telemetry.ingest.records import DeviceRule, Rejection
from apps.telemetry.models import SparkplugNode
from apps.telemetry.signals import LivenessChange, devices_liveness_changed

logger = logging.getLogger(__name__)

NodeKey = tuple[str, str]  # (group_id, edge_node_id)


def uid_templates() -> UidTemplates:
    """The device mapping of the settings, checked: a template naming another field would fail every message."""
    templates = UidTemplates(node=settings.SPARKPLUG_NODE_UID, device=settings.SPARKPLUG_DEVICE_UID)
    topic = sparkplug.SparkplugTopic("group", "DDATA", "node", "device")
    try:
        templates.uid(topic), templates.uid(topic, "")
    except (KeyError, IndexError, ValueError) as error:
        raise ImproperlyConfigured(
            f"SPARKPLUG_NODE_UID/SPARKPLUG_DEVICE_UID may use only {{group_id}}, {{edge_node_id}} and {{device_id}}: "
            f"{error!r}"
        ) from None
    return templates


class SparkplugNodes:
    """(group_id, edge_node_id) -> the NodeState last committed, for one listener process."""

    def __init__(self, *, rebirth_interval: float | None = None, clock=time.monotonic):
        self.rebirth_interval = (
            settings.SPARKPLUG_REBIRTH_INTERVAL_SECONDS if rebirth_interval is None else rebirth_interval
        )
        self.uids = uid_templates()
        self.clock = clock
        self._states: dict[NodeKey, NodeState] = {}
        self._loaded = False
        self._rebirth_requested: dict[NodeKey, float] = {}

    def ensure_loaded(self) -> None:
        """Read every persisted state the first time (one query); later batches use memory only."""
        if self._loaded:
            return
        rows = SparkplugNode.objects.values_list("group_id", "edge_node_id", "online", "bd_seq", "seq", "definitions")
        self._states = {
            (group_id, node_id): NodeState.from_json(online=online, bd_seq=bd_seq, seq=seq, definitions=definitions)
            for group_id, node_id, online, bd_seq, seq, definitions in rows
        }
        self._loaded = True
        logger.info("loaded the birth state of %d Sparkplug edge nodes", len(self._states))

    def get(self, key: NodeKey) -> NodeState | None:
        return self._states.get(key)

    def committed(self, states: Mapping[NodeKey, NodeState]) -> None:
        self._states.update(states)

    def rebirth_due(self, key: NodeKey) -> bool:
        """Whether a rebirth request may go to this node now (at most one per interval: a node answering a request
        publishes its births once; asking again while they are on their way would only make it publish them
        twice). Marks it sent."""
        now = self.clock()
        last = self._rebirth_requested.get(key)
        if last is not None and now - last < self.rebirth_interval:
            return False
        self._rebirth_requested[key] = now
        return True


@dataclass(slots=True)
class _DeviceLiveness:
    device_id: int
    uid: str
    site_id: int
    alive: bool
    announced: bool  # a birth or a death in this batch: written to the device and pushed to the dashboard
    at: datetime.datetime


class SparkplugBatch:
    """The Sparkplug side of one IngestBatch; see the module docstring."""

    def __init__(self, nodes: SparkplugNodes):
        nodes.ensure_loaded()
        self.nodes = nodes
        self.states: dict[NodeKey, NodeState] = {}  # changed by this batch's messages
        self.defined: set[NodeKey] = set()  # ... beyond the sequence number
        self.rebirths: dict[NodeKey, str] = {}  # node -> why it must be asked to rebirth
        self.liveness: dict[int, _DeviceLiveness] = {}  # device id -> its state at the end of the batch

    @property
    def changed(self) -> bool:
        return bool(self.states or self.liveness)

    def options(self, message_options: Mapping) -> Mapping:
        """The parser's options for a message: its edge node's current state and the device mapping."""
        try:
            key = sparkplug.parse_topic(message_options.get("topic", "")).node_key
        except Rejection:
            return message_options  # the parser refuses the topic
        state = self.states.get(key) or self.nodes.get(key)
        return {**message_options, "node": state, "uids": self.nodes.uids}

    def absorb(
        self,
        effect: SparkplugEffect,
        *,
        received_at: datetime.datetime,
        rules: Mapping[str, DeviceRule],
        site_id: int | None,
    ) -> None:
        """Take a parsed message's effect into the batch. Births and deaths apply only to registered devices on the
        gateway's site: an edge node cannot mark another site's device offline."""
        key = effect.topic.node_key
        self.states[key] = effect.node
        if effect.defined:
            self.defined.add(key)
        if effect.rebirth:
            self.rebirths[key] = effect.rebirth
        for event in effect.liveness:
            rule = rules.get(event.device_uid)
            if rule is None or (site_id is not None and rule.site_id != site_id):
                continue
            previous = self.liveness.get(rule.device_id)
            announced = event.announce or (previous is not None and previous.announced)
            at = received_at if event.announce or previous is None else previous.at
            self.liveness[rule.device_id] = _DeviceLiveness(
                rule.device_id, rule.uid, rule.site_id, event.alive, announced, at
            )

    # --- inside the batch's transaction ------------------------------------------------------------------------------
    def persist(self) -> None:
        """Write the changed states and the devices' liveness; after the commit, update the store and tell the
        dashboard. Runs again, whole, if the transaction is retried."""
        now = timezone.now()
        full = [key for key in self.states if key in self.defined]
        if full:
            SparkplugNode.objects.bulk_create(
                [self._row(key, now) for key in sorted(full)],
                update_conflicts=True,
                unique_fields=["group_id", "edge_node_id"],
                update_fields=["online", "bd_seq", "seq", "definitions", "updated_at"],
            )
        seq_only = sorted(key for key in self.states if key not in self.defined)
        if seq_only:
            # Data messages move only the sequence number: one statement for all nodes, the definitions untouched.
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE telemetry_sparkplugnode n SET seq = v.seq FROM unnest(%s::text[], %s::text[], %s::int[])"
                    " AS v (group_id, edge_node_id, seq)"
                    " WHERE n.group_id = v.group_id AND n.edge_node_id = v.edge_node_id",
                    [
                        [group for group, _ in seq_only],
                        [node for _, node in seq_only],
                        [self.states[key].seq for key in seq_only],
                    ],
                )
        announced = [entry for entry in self.liveness.values() if entry.announced]
        # One statement per instant (a node's death takes all its devices with it at once), in a stable order.
        by_instant: dict[tuple[bool, datetime.datetime], list[int]] = {}
        for entry in announced:
            by_instant.setdefault((entry.alive, entry.at), []).append(entry.device_id)
        for (alive, at), device_ids in sorted(by_instant.items()):
            devices = Device.objects.filter(pk__in=sorted(device_ids))
            if alive:
                devices.update(offline_since=None, last_seen=Greatest(Coalesce(F("last_seen"), Value(at)), Value(at)))
            else:
                devices.update(offline_since=at)
        states = dict(self.states)
        changes = [
            LivenessChange(entry.device_id, entry.uid, entry.site_id, entry.alive, entry.at.timestamp())
            for entry in announced
        ]
        transaction.on_commit(lambda: self._committed(states, changes))

    def _row(self, key: NodeKey, now: datetime.datetime) -> SparkplugNode:
        state = self.states[key]
        return SparkplugNode(
            group_id=key[0],
            edge_node_id=key[1],
            online=state.online,
            bd_seq=state.bd_seq,
            seq=state.seq,
            definitions=state.as_json(),
            updated_at=now,
        )

    def _committed(self, states: dict[NodeKey, NodeState], changes: list[LivenessChange]) -> None:
        self.nodes.committed(states)
        if changes:
            devices_liveness_changed.send_robust(sender=Device, changes=changes)

    # --- after the commit -----------------------------------------------------------------------------------------
    def rebirth_commands(self) -> list[tuple[str, bytes]]:
        """(topic, payload) of the NCMD ``Node Control/Rebirth`` to publish, within the rate limit."""
        commands = []
        now_ms = epoch_ms(timezone.now())
        for (group_id, node_id), why in self.rebirths.items():
            if self.nodes.rebirth_due((group_id, node_id)):
                logger.info("requesting a rebirth of Sparkplug edge node %s/%s: %s", group_id, node_id, why)
                commands.append((sparkplug.command_topic(group_id, node_id), sparkplug.rebirth_command(now_ms)))
        return commands
