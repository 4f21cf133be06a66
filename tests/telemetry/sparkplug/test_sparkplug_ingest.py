"""Sparkplug through the ingest service and PostgreSQL: the birth state commits with its batch (and only then reaches
the listener's memory), deaths mark devices offline at once and only on the gateway's site, status everywhere
respects the marker, rebirth requests are rate-limited, and the broker ACL confines a gateway to its edge node."""

import datetime

import pysparkplug as spb
import pytest
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from apps.dashboard import fanout
from apps.dashboard.fanout import LivePublisher
from apps.dashboard.selectors import devices_with_status
from apps.devices.broker_auth import render_acl_file
from apps.devices.choices import DeviceStatus, UnknownMetricPolicy
from apps.devices.models import Device, MqttCredential
from apps.telemetry.choices import RejectReason
from apps.telemetry.ingest.directory import DeviceDirectory
from apps.telemetry.ingest.listener import _sparkplug_message
from apps.telemetry.models import DeadLetter, Reading, SparkplugNode
from apps.telemetry.services import IngestBatch
from apps.telemetry.signals import devices_liveness_changed
from apps.telemetry.sparkplug import SparkplugNodes
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory
from tests.telemetry.sparkplug.edge_node import metric

DT = spb.DataType
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fleet(site_a, site_b):
    pump = DeviceTypeFactory(organization=site_a.organization, unknown_metric_policy=UnknownMetricPolicy.LENIENT)
    MetricDefinitionFactory(device_type=pump, key="temp", min_value=-50, max_value=150)
    gateway = GatewayFactory(site=site_a, uid="gw")
    return {
        "gateway": gateway,
        "node": DeviceFactory(uid="gw", site=site_a, device_type=pump, gateway=gateway),
        "pump": DeviceFactory(uid="gw.pump", site=site_a, device_type=pump, gateway=gateway),
        "foreign": DeviceFactory(uid="gw.far", site=site_b, device_type=pump),
    }


class Node:
    """Payloads of edge node ``gw`` in group ``g``, numbered as the spec says."""

    def __init__(self):
        self.seq = 0
        self.ts = int(timezone.now().timestamp() * 1000) - 60_000

    def _next(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def nbirth(self, *metrics, bd_seq=1):
        self.seq = 0
        bd = metric("bdSeq", DT.INT64, bd_seq, ts=self.ts)
        return "spBv1.0/g/NBIRTH/gw", spb.NBirth(timestamp=self.ts, seq=0, metrics=(bd, *metrics)).encode()

    def dbirth(self, device, *metrics):
        return f"spBv1.0/g/DBIRTH/gw/{device}", spb.DBirth(
            timestamp=self.ts, seq=self._next(), metrics=metrics
        ).encode()

    def ddata(self, device, *metrics):
        return f"spBv1.0/g/DDATA/gw/{device}", spb.DData(timestamp=self.ts, seq=self._next(), metrics=metrics).encode()

    def ddeath(self, device):
        return f"spBv1.0/g/DDEATH/gw/{device}", spb.DDeath(timestamp=self.ts, seq=self._next()).encode()

    def ndeath(self, bd_seq=1):
        death = spb.NDeath(timestamp=None, bd_seq_metric=metric("bdSeq", DT.INT64, bd_seq))
        return "spBv1.0/g/NDEATH/gw", death.encode()


def ingest(nodes: SparkplugNodes, *messages, at=None):
    batch = IngestBatch(DeviceDirectory(), nodes)
    received_at = at or timezone.now()
    outcomes = [batch.add(_sparkplug_message(topic, payload, received_at)) for topic, payload in messages]
    batch.commit()
    return batch, outcomes


def status_of(device: Device) -> str:
    device.refresh_from_db()
    annotated = devices_with_status(Device.objects.filter(pk=device.pk), now=timezone.now()).get()
    assert annotated.status_code == device.status()  # the SQL rule and the Python rule agree
    return device.status()


def test_births_commit_with_their_batch_and_only_then_reach_the_listeners_memory(fleet):
    node, nodes = Node(), SparkplugNodes()
    temp = metric("Temp", DT.FLOAT, 20.5, alias=2, ts=node.ts)
    ingest(nodes, node.nbirth(), node.dbirth("pump", temp), node.ddata("pump", metric(None, DT.FLOAT, 21.5, alias=2)))
    assert sorted(Reading.objects.values_list("value", flat=True)) == [20.5, 21.5]
    row = SparkplugNode.objects.get()
    assert (row.group_id, row.edge_node_id, row.online, row.bd_seq, row.seq) == ("g", "gw", True, 1, 2)
    assert nodes.get(("g", "gw")).aliases[2].name == "Temp"

    # Data moves only the sequence number; a batch rolled back leaves neither the row nor the memory changed.
    ingest(nodes, node.ddata("pump", metric(None, DT.FLOAT, 22.5, alias=2, ts=node.ts + 5)))
    assert SparkplugNode.objects.get().seq == 3
    other = SparkplugNodes()
    with pytest.raises(RuntimeError), transaction.atomic():
        ingest(other, node.nbirth(bd_seq=2))
        raise RuntimeError("the flush failed")
    assert SparkplugNode.objects.get().bd_seq == 1
    assert other.get(("g", "gw")).bd_seq == 1  # loaded from the table, not the rolled-back birth


def test_a_restarted_listener_reads_data_against_the_persisted_aliases(fleet):
    node = Node()
    ingest(SparkplugNodes(), node.nbirth(), node.dbirth("pump", metric("Temp", DT.FLOAT, 1.0, alias=2, ts=node.ts)))
    batch, [outcome] = ingest(SparkplugNodes(), node.ddata("pump", metric(None, DT.FLOAT, 2.0, alias=2)))
    assert outcome.accepted == 1 and outcome.errors == []
    assert batch.sparkplug.rebirth_commands() == []


def test_unresolvable_data_is_dead_lettered_and_a_rebirth_requested_at_most_once_per_interval(fleet):
    clock = [100.0]
    nodes = SparkplugNodes(rebirth_interval=5, clock=lambda: clock[0])
    node = Node()
    node.seq = 40
    batch, [outcome] = ingest(nodes, node.ddata("pump", metric(None, DT.FLOAT, 2.0, alias=2)))
    assert [e.reason for e in outcome.errors] == [RejectReason.SPARKPLUG_UNKNOWN_ALIAS]
    assert DeadLetter.objects.get().reason == RejectReason.SPARKPLUG_UNKNOWN_ALIAS
    [(topic, payload)] = batch.sparkplug.rebirth_commands()
    command = spb.NCmd.decode(payload)
    assert topic == "spBv1.0/g/NCMD/gw"
    assert [(m.name, m.datatype, m.value) for m in command.metrics] == [("Node Control/Rebirth", DT.BOOLEAN, True)]
    again, _ = ingest(nodes, node.ddata("pump", metric(None, DT.FLOAT, 2.0, alias=2)))
    assert again.sparkplug.rebirth_commands() == []
    clock[0] += 5
    assert len(again.sparkplug.rebirth_commands()) == 1


def test_deaths_mark_devices_offline_at_once_and_births_or_readings_bring_them_back(fleet):
    node, nodes = Node(), SparkplugNodes()
    changes = []
    devices_liveness_changed.connect(lambda sender, changes=(), **kw: changes_seen(changes), weak=False)

    def changes_seen(batch_changes):
        changes.extend(batch_changes)

    ingest(nodes, node.nbirth(), node.dbirth("pump", metric("Temp", DT.FLOAT, 1.0, alias=2, ts=node.ts)))
    assert status_of(fleet["pump"]) == status_of(fleet["node"]) == DeviceStatus.ONLINE
    assert {(c.uid, c.online) for c in changes} == {("gw", True), ("gw.pump", True)}

    changes.clear()
    ingest(nodes, node.ddeath("pump"))
    assert status_of(fleet["pump"]) == DeviceStatus.OFFLINE
    assert status_of(fleet["node"]) == DeviceStatus.ONLINE
    assert [(c.uid, c.online) for c in changes] == [("gw.pump", False)]

    # Data and then its device's death in one batch: the death, which came last, wins.
    ingest(nodes, node.dbirth("pump"), node.ddata("pump", metric(None, DT.FLOAT, 3.0, alias=2)), node.ddeath("pump"))
    assert status_of(fleet["pump"]) == DeviceStatus.OFFLINE

    # A reading in any dialect ends the marker (the writer clears it).
    ingest(nodes, node.dbirth("pump", metric("Temp", DT.FLOAT, 1.0, alias=2, ts=node.ts + 7)))
    assert status_of(fleet["pump"]) == DeviceStatus.ONLINE

    # The node's death takes its born devices with it; a stale NDEATH (an older bdSeq) changes nothing.
    ingest(nodes, node.ndeath(bd_seq=0))
    assert status_of(fleet["node"]) == DeviceStatus.ONLINE
    ingest(nodes, node.ndeath(bd_seq=1))
    assert status_of(fleet["node"]) == status_of(fleet["pump"]) == DeviceStatus.OFFLINE
    assert not SparkplugNode.objects.get().online


def test_an_edge_node_cannot_mark_another_sites_device_nor_ingest_without_its_gateway(fleet):
    node, nodes = Node(), SparkplugNodes()
    fleet["foreign"].last_seen = timezone.now()
    fleet["foreign"].save(update_fields=["last_seen"])
    _, outcomes = ingest(
        nodes, node.nbirth(), node.dbirth("far", metric("Temp", DT.FLOAT, 1.0, ts=node.ts)), node.ddeath("far")
    )
    assert [e.reason for e in outcomes[1].errors] == [RejectReason.WRONG_SITE]
    assert status_of(fleet["foreign"]) == DeviceStatus.ONLINE

    fleet["gateway"].delete()
    _, [outcome] = ingest(SparkplugNodes(), node.ddata("pump", metric(None, DT.FLOAT, 1.0, alias=2)))
    assert outcome.rejection.reason == RejectReason.UNKNOWN_GATEWAY


def test_the_dashboard_is_told_of_deaths_and_the_next_reading_announces_online(fleet, monkeypatch):
    publisher = LivePublisher()
    publisher.background = False
    monkeypatch.setattr(fanout, "publisher", publisher)
    node, nodes = Node(), SparkplugNodes()
    ingest(nodes, node.nbirth(), node.dbirth("pump", metric("Temp", DT.FLOAT, 1.0, alias=2, ts=node.ts)))
    publisher.coalescer.pending.clear()
    ingest(nodes, node.ddeath("pump"))
    status = publisher.coalescer.pending[("status", fleet["pump"].id)].message
    assert (status["device"], status["status"]) == ("gw.pump", "offline")
    publisher.coalescer.pending.clear()
    ingest(nodes, node.dbirth("pump"), node.ddata("pump", metric(None, DT.FLOAT, 5.0, alias=2, ts=node.ts + 9)))
    assert publisher.coalescer.pending[("status", fleet["pump"].id)].message["status"] == "online"


def test_the_offline_beat_does_not_announce_a_death_twice(fleet, monkeypatch):
    published = []
    monkeypatch.setattr(fanout, "device_status_changed", lambda **kwargs: published.append(kwargs["uid"]))
    stale = timezone.now() - datetime.timedelta(minutes=6)
    Device.objects.filter(pk=fleet["pump"].pk).update(last_seen=stale, offline_since=stale)
    Device.objects.filter(pk=fleet["node"].pk).update(last_seen=stale)
    cache.delete(fanout.OFFLINE_WATERMARK_KEY)  # look back the whole window, whatever ran before
    fanout.devices_offline_publish()
    assert published == ["gw"]


def test_the_acl_lets_a_gateway_speak_only_as_its_own_edge_node(fleet):
    MqttCredential.objects.create(gateway=fleet["gateway"], username="gw", password_hash="$7$101$x$y")
    blocks = render_acl_file(list(MqttCredential.objects.all())).split("\n\n")
    [gateway] = [block for block in blocks if block.startswith("user gw\n")]
    assert gateway.splitlines()[1:] == [
        "topic write fieldwatch/gateways/gw/telemetry",
        "topic write spBv1.0/+/NBIRTH/gw",
        "topic write spBv1.0/+/NDATA/gw",
        "topic write spBv1.0/+/NDEATH/gw",
        "topic write spBv1.0/+/DBIRTH/gw/+",
        "topic write spBv1.0/+/DDATA/gw/+",
        "topic write spBv1.0/+/DDEATH/gw/+",
        "topic read spBv1.0/+/NCMD/gw",
        "topic read spBv1.0/+/DCMD/gw/+",
    ]
    [listener] = [block for block in blocks if block.startswith("user fw-test-listener\n")]
    assert "topic read spBv1.0/#" in listener and "topic write spBv1.0/+/NCMD/+" in listener
