"""Outage drills with the agent as a real process: a real Modbus server whose counter register changes on every
read (so each poll the server served is known), a real Mosquitto with logins, kill -9 of the agent, a full disk
bound. Every served poll must arrive; the only exception is a poll the agent was killed in the middle of."""

import json
import time

import pytest
import yaml
from agent_servers import AgentProcess, Recorder, wait_until
from fieldwatch_agent.buffer import Buffer, Reading

from conftest import GATEWAY, GATEWAY_PASSWORD, READER, READER_PASSWORD

POLL_INTERVAL_S = 0.1  # 10 readings per second


def _config(tmp_path, modbus, mosquitto, *, buffer=None, forwarding=None):
    (tmp_path / "counter.yaml").write_text(
        yaml.safe_dump(
            {
                "model": "counter",
                "poll_groups": [
                    {
                        "name": "fast",
                        "interval_s": POLL_INTERVAL_S,
                        "registers": [{"metric": "seq", "address": 0, "type": "uint32"}],
                    }
                ],
            }
        )
    )
    config = {
        "buffer": {"path": "buffer.sqlite3", **(buffer or {})},
        "sink": {
            "kind": "mqtt",
            "url": f"mqtt://127.0.0.1:{mosquitto.port}",
            "uid": GATEWAY,
            "password": GATEWAY_PASSWORD,
            "ack_timeout_s": 3,
            "readings_per_message": 200,
        },
        "forwarding": {"retry_min_s": 0.2, "retry_max_s": 1, "linger_s": 0.05, **(forwarding or {})},
        "heartbeat": {"device": "gw-test-agent", "interval_s": 1},
        "sources": [
            {
                "kind": "modbus_tcp",
                "name": "meters",
                "host": "127.0.0.1",
                "port": modbus.port,
                "timeout_s": 0.5,
                "devices": [{"uid": "fm-1", "unit_id": 1, "map": "counter.yaml"}],
            }
        ],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _seqs(recorder, device="fm-1"):
    return [(values["seq"], ts) for dev, ts, values in recorder.readings() if dev == device]


def _assert_each_served_poll_arrived(recorder, served, allowed_missing=frozenset()):
    received = _seqs(recorder)
    seqs = {seq for seq, _ in received}
    missing = set(range(1, served + 1)) - seqs
    assert missing <= allowed_missing, f"lost polls {sorted(missing)[:20]} of {served}"
    by_seq = sorted(set(received))
    assert [ts for _, ts in by_seq] == sorted(ts for _, ts in by_seq), "ts must follow the poll order"
    return len(received) - len(seqs)  # duplicates: resent after an unclear outcome, absorbed by the platform


@pytest.fixture
def recorder(mosquitto):
    recorder = Recorder(mosquitto, READER, READER_PASSWORD, topic="fieldwatch/#")
    yield recorder
    recorder.close()


def test_broker_outage_every_poll_arrives_after_it_returns(tmp_path, modbus, mosquitto, recorder):
    counter = modbus.counting(unit=1)
    agent = AgentProcess(_config(tmp_path, modbus, mosquitto)).start()
    try:
        assert wait_until(lambda: len(_seqs(recorder)) >= 10, timeout=15), agent.output()
        mosquitto.stop()
        time.sleep(5)  # 50 polls into the buffer meanwhile
        backlog = Buffer(tmp_path / "buffer.sqlite3", read_only=True).stats().depth
        mosquitto.start()
        time.sleep(1)
        assert agent.terminate() == 0
        served = counter.reads
        agent.start()  # drains what is left after a clean restart too
        assert wait_until(lambda: {s for s, _ in _seqs(recorder)} >= set(range(1, served + 1)), timeout=20)
    finally:
        agent.terminate()
    assert backlog >= 40
    _assert_each_served_poll_arrived(recorder, served)
    heartbeats = [values for dev, _, values in recorder.readings() if dev == "gw-test-agent"]
    assert max(beat["agent_buffer_depth"] for beat in heartbeats) >= 20  # the backlog shows in the heartbeat
    assert max(beat["agent_buffer_oldest_age_s"] for beat in heartbeats) >= 2


def test_kill_9_mid_backlog_loses_nothing(tmp_path, modbus, mosquitto, recorder):
    counter = modbus.counting(unit=1)
    config = _config(tmp_path, modbus, mosquitto, forwarding={"drain_rate": 1500})
    # A backlog from an earlier outage: 6000 readings buffered a minute ago, drained at 1500 per second.
    buffer = Buffer(tmp_path / "buffer.sqlite3")
    buffer.append(Reading("fm-old", 1_700_000_000_000 + i, {"seq": i}) for i in range(6000))
    buffer._db.execute("UPDATE reading SET buffered_ms = buffered_ms - 60000")
    buffer.close()

    agent = AgentProcess(config).start()
    depth = Buffer(tmp_path / "buffer.sqlite3", read_only=True)
    assert wait_until(lambda: depth.stats().depth < 4500, timeout=15), agent.output()
    served_before_kill = counter.reads
    agent.kill()  # mid-backlog: messages in flight, PUBACKs not yet deleted from the buffer
    served_after_kill = counter.reads
    left = depth.stats().depth
    depth.close()
    agent.start()
    try:
        assert wait_until(lambda: len({s for s, _ in _seqs(recorder, "fm-old")}) == 6000, timeout=30), agent.output()
        time.sleep(1)
    finally:
        assert agent.terminate() == 0
    assert 0 < left < 6000
    old = [seq for seq, _ in _seqs(recorder, "fm-old")]
    assert set(old) == set(range(6000))
    # At most the poll in progress at the kill: the server answered it, the agent died before committing it.
    kill_window = frozenset(range(served_before_kill, served_after_kill + 2))
    _assert_each_served_poll_arrived(recorder, counter.reads, allowed_missing=kill_window)
    print(json.dumps({"backlog_left_at_kill": left, "duplicates_after_restart": len(old) - 6000}))


def test_disk_bound_drops_the_oldest_counted_and_reported(tmp_path, modbus, mosquitto, recorder):
    counter = modbus.counting(unit=1)
    config = _config(tmp_path, modbus, mosquitto, buffer={"max_readings": 25})
    mosquitto.stop()
    agent = AgentProcess(config).start()
    try:
        time.sleep(5)  # ~50 polls and 5 heartbeats against a bound of 25
        mosquitto.start()
        assert wait_until(
            lambda: any(
                dev == "gw-test-agent" and v["agent_buffer_dropped_total"] > 0 for dev, _, v in recorder.readings()
            ),
            timeout=15,
        ), agent.output()
        time.sleep(1)
    finally:
        agent.terminate()
    received = sorted({seq for seq, _ in _seqs(recorder)})
    missing = sorted(set(range(1, counter.reads + 1)) - set(received))
    assert missing and missing == list(range(1, len(missing) + 1))  # exactly the oldest ones were dropped
    stats = Buffer(tmp_path / "buffer.sqlite3", read_only=True).stats()
    assert stats.dropped_total >= len(missing)
    assert "buffer full" in AgentProcess(config).output()
