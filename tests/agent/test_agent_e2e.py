"""The edge agent against the real platform: a Modbus meter polled at 10 readings/s, the project's Mosquitto (logins
only) stopped for 30 s, the agent killed with SIGKILL while it drains the backlog, the real listener writing to
PostgreSQL. Every poll the meter served is stored exactly once, in poll order; the agent runs as its own process
and knows the platform only by the wire contract (fieldwatch_agent imports nothing of apps/). When an outage fills
the agent's disk bound, the oldest polls are the ones dropped, and the count reaches the platform in the heartbeat
and the gateways page."""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import yaml
from django.urls import reverse
from fieldwatch_agent.buffer import Buffer
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock

from apps.devices.choices import UnknownMetricPolicy
from apps.telemetry.models import LatestValue, Reading
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory
from tests.support.modbus import ModbusMeter
from tests.support.mqtt import broker_logins, listener
from tests.support.processes import database_url, wait_until

pytestmark = pytest.mark.e2e

OUTAGE_S = 30


class CountingMeter(ModbusMeter):
    """A meter whose holding registers 0-1 (uint32) count the reads of them: each poll gets a new number, so the
    test knows exactly which polls the meter served."""

    def __init__(self):
        meter = self

        class Counter(ModbusSequentialDataBlock):
            def getValues(self, address, count=1):
                if address == 1:  # protocol address 0: the device context adds one
                    meter.reads += 1
                    self.setValues(1, [meter.reads >> 16, meter.reads & 0xFFFF])
                return super().getValues(address, count)

        self.reads = 0
        super().__init__({1: ModbusDeviceContext(hr=Counter(0, [0] * 16))})


@pytest.fixture
def fleet(transactional_db, site_a):
    meter_type = DeviceTypeFactory(organization=site_a.organization, unknown_metric_policy=UnknownMetricPolicy.STRICT)
    MetricDefinitionFactory(device_type=meter_type, key="seq", min_value=0, max_value=1e9)
    # The gateway's own device carries the agent's heartbeat: lenient, its per-device metrics need no definitions.
    agent_type = DeviceTypeFactory(organization=site_a.organization, unknown_metric_policy=UnknownMetricPolicy.LENIENT)
    gateway = GatewayFactory(site=site_a, uid="gw-agent-e2e")
    return {
        "gateway": gateway,
        "meter": DeviceFactory(uid="fm-agent-e2e", site=site_a, device_type=meter_type, gateway=gateway),
        "agent": DeviceFactory(uid="gw-agent-e2e-agent", site=site_a, device_type=agent_type, gateway=gateway),
    }


def _agent_config(tmp_path, meter, broker, prefix, password, buffer: dict | None = None) -> str:
    (tmp_path / "counter.yaml").write_text(
        yaml.safe_dump(
            {
                "model": "counter",
                "poll_groups": [
                    {
                        "name": "fast",
                        "interval_s": 0.1,
                        "registers": [{"metric": "seq", "address": 0, "type": "uint32"}],
                    }
                ],
            }
        )
    )
    config = {
        "buffer": {"path": str(tmp_path / "buffer.sqlite3"), **(buffer or {})},
        "sink": {
            "kind": "mqtt",
            "url": broker.url,
            "topic_prefix": prefix,
            "uid": "gw-agent-e2e",
            "password": password,
            "ack_timeout_s": 5,
        },
        # 100 backlog readings a second: the 300 of the outage take seconds to drain, time to kill it midway.
        "forwarding": {"drain_rate": 100, "live_window_s": 2, "retry_min_s": 0.2, "retry_max_s": 1},
        "heartbeat": {"device": "gw-agent-e2e-agent", "interval_s": 2},
        "sources": [
            {
                "kind": "modbus_tcp",
                "name": "meter",
                "host": "127.0.0.1",
                "port": meter.port,
                "devices": [{"uid": "fm-agent-e2e", "unit_id": 1, "map": "counter.yaml"}],
            }
        ],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _start_agent(config: str, log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fieldwatch_agent", "run", "--config", config],
        stdout=log,
        stderr=log,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _stored_seqs(device) -> list[float]:
    return list(
        Reading.objects.filter(series__device=device, series__metric_key="seq")
        .order_by("ts")
        .values_list("value", flat=True)
    )


def test_outage_and_kill_9_mid_backlog_store_every_poll_exactly_once(broker, fleet, tmp_path):
    prefix = f"fwagent{uuid.uuid4().hex[:6]}"
    passwords = broker_logins(broker, prefix, fleet["gateway"])
    process = listener(broker.url, prefix, database_url()).start()
    meter = CountingMeter()
    config = _agent_config(tmp_path, meter, broker, prefix, passwords["gw-agent-e2e"])
    log = open(tmp_path / "agent.log", "ab")  # noqa: SIM115 - the agent's output for the whole test
    agent = _start_agent(config, log)
    try:
        assert wait_until(lambda: len(_stored_seqs(fleet["meter"])) >= 20, timeout=30), (
            tmp_path / "agent.log"
        ).read_text()

        broker.stop()
        time.sleep(OUTAGE_S)  # ~300 polls buffered at the edge
        broker.start()
        assert wait_until(lambda: len(_stored_seqs(fleet["meter"])) >= 60, timeout=30)
        served_before_kill = meter.reads
        agent.send_signal(signal.SIGKILL)  # mid-backlog: 100 a second of ~300
        agent.wait(10)
        served_after_kill = meter.reads
        stored_at_kill = len(_stored_seqs(fleet["meter"]))
        agent = _start_agent(config, log)

        time.sleep(3)
        agent.terminate()
        assert agent.wait(20) == 0
        served = meter.reads
        assert wait_until(lambda: len(_stored_seqs(fleet["meter"])) >= served - 2, timeout=60)
        time.sleep(2)  # anything still arriving would be a duplicate or an extra
    finally:
        if agent.poll() is None:
            agent.kill()
        meter.close()
        process.terminate()
        log.close()

    stored = _stored_seqs(fleet["meter"])
    assert stored_at_kill < served_before_kill - 50, "the kill must come while a backlog is left"
    # Exactly once: the (series, ts) key would absorb a resend, and the counter shows no poll stored twice.
    assert len(stored) == len(set(stored))
    # In poll order: ordered by ts, the counter only goes up.
    assert stored == sorted(stored)
    # Nothing lost but, at most, the poll the SIGKILL interrupted (served by the meter, never committed).
    buffer = Buffer(tmp_path / "buffer.sqlite3", read_only=True)
    left = {item.reading.values["seq"] for item in buffer.oldest(10_000) if item.reading.device == "fm-agent-e2e"}
    buffer.close()  # what a clean stop could not send in time waits there for the next start
    missing = set(range(1, served + 1)) - {int(v) for v in stored} - left
    assert missing <= set(range(served_before_kill, served_after_kill + 2)), sorted(missing)[:20]
    assert len(missing) <= 1
    beats = Reading.objects.filter(series__device=fleet["agent"], series__metric_key="agent_buffer_depth")
    assert beats.filter(value__gte=100).exists(), "the heartbeat reports the backlog"
    print(f"served {served} polls, stored {len(stored)}, missing {sorted(missing)}, kill at {stored_at_kill} stored")


BOUND = 40  # readings the buffer may hold: an 8 s outage at 10 polls/s (and its heartbeats) overflows it


def _buffer_stats(tmp_path):
    buffer = Buffer(tmp_path / "buffer.sqlite3", read_only=True)
    stats = buffer.stats()
    buffer.close()
    return stats


def _buffer_left(tmp_path) -> set[int]:
    buffer = Buffer(tmp_path / "buffer.sqlite3", read_only=True)
    left = {int(item.reading.values["seq"]) for item in buffer.oldest(10_000) if item.reading.device == "fm-agent-e2e"}
    buffer.close()
    return left


def test_disk_bound_drops_the_oldest_counted_in_the_heartbeat_and_on_the_gateways_page(
    broker, fleet, tmp_path, client, bob
):
    prefix = f"fwagent{uuid.uuid4().hex[:6]}"
    passwords = broker_logins(broker, prefix, fleet["gateway"])
    process = listener(broker.url, prefix, database_url()).start()
    meter = CountingMeter()
    config = _agent_config(tmp_path, meter, broker, prefix, passwords["gw-agent-e2e"], buffer={"max_readings": BOUND})
    log = open(tmp_path / "agent.log", "ab")  # noqa: SIM115 - the agent's output for the whole test
    dropped = LatestValue.objects.filter(series__device=fleet["agent"], series__metric_key="agent_buffer_dropped_total")
    broker.stop()
    agent = _start_agent(config, log)
    try:
        time.sleep(8)  # ~80 polls and 4 heartbeats against a bound of 40
        broker.start()
        served_at_return = meter.reads
        agent_log = tmp_path / "agent.log"
        assert wait_until(lambda: dropped.filter(value__gt=0).exists(), timeout=30), agent_log.read_text()
        # The backlog that survived the bound is drained (100 readings/s) up to the polls of the broker's return.
        assert wait_until(lambda: max(_stored_seqs(fleet["meter"]), default=0) >= served_at_return, timeout=30)
        # Drops stop once the backlog is under the bound; a later heartbeat brings the final count to the platform.
        assert wait_until(lambda: dropped.get().value == _buffer_stats(tmp_path).dropped_total, timeout=30)
        agent.terminate()
        assert agent.wait(20) == 0
        time.sleep(1)  # the listener's last flush
    finally:
        if agent.poll() is None:
            agent.kill()
        meter.close()
        process.terminate()
        log.close()

    stored = [int(value) for value in _stored_seqs(fleet["meter"])]
    assert stored == sorted(set(stored))  # once each, in poll order
    missing = sorted(set(range(1, meter.reads + 1)) - set(stored) - _buffer_left(tmp_path))
    # Exactly the oldest polls were dropped, and the heartbeat counted at least those (heartbeats are dropped too).
    assert missing and missing == list(range(1, len(missing) + 1)), missing
    reported = dropped.get().value
    assert reported == _buffer_stats(tmp_path).dropped_total >= len(missing)
    assert "buffer full" in (tmp_path / "agent.log").read_text()

    # The operator sees the drops on the gateways page, in the agent's cell of the gateway's row.
    client.force_login(bob)
    html = client.get(reverse("dashboard:gateway-list"), {"site": "all"}).content.decode()
    cell = 'data-latest="gw-agent-e2e-agent:agent_buffer_dropped_total" data-health="agent_buffer_dropped_total">'
    assert f"{cell}{int(reported)}<" in html
    print(f"served {meter.reads} polls, stored {len(stored)}, dropped the oldest {len(missing)}, reported {reported}")
