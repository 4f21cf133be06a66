"""Pass-through sources (local MQTT and HTTP publishers into the buffer) and the commands: check, status, probe."""

import json
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from agent_servers import free_port, wait_until
from fieldwatch_agent.buffer import Buffer
from fieldwatch_agent.cli import main
from fieldwatch_agent.config import HttpPassThroughConfig, MqttPassThroughConfig
from fieldwatch_agent.passthrough import HttpPassThrough, MqttPassThrough

from conftest import GATEWAY, GATEWAY_PASSWORD, READER, READER_PASSWORD


@pytest.fixture
def buffer(tmp_path):
    buffer = Buffer(tmp_path / "b.sqlite3")
    yield buffer
    buffer.close()


def _post(url, document):
    request = urllib.request.Request(url, data=json.dumps(document).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_http_pass_through_buffers_the_ingest_shapes(buffer):
    source = HttpPassThrough(HttpPassThroughConfig(kind="http_passthrough", name="local", listen="127.0.0.1:0"), buffer)
    source.start()
    url = f"http://127.0.0.1:{source.port}/api/v1/ingest"
    try:
        assert _post(url, {"hp-1": [{"ts": 1_700_000_000_000, "values": {"t": 1}}], "hp-2": {"t": 2}}) == (
            202,
            {"buffered": 2},
        )
        assert _post(url, [{"device": "hp-3", "ts": 1_700_000_000_500, "values": {"t": 3}}])[0] == 202
        assert _post(url, {"hp-1": [{"ts": "yesterday", "values": {"t": 1}}]})[0] == 400
    finally:
        source.stop()
    readings = [b.reading for b in buffer.oldest(10)]
    assert [(r.device, r.values) for r in readings] == [("hp-1", {"t": 1}), ("hp-2", {"t": 2}), ("hp-3", {"t": 3})]
    assert readings[0].ts == 1_700_000_000_000 and readings[1].ts > 1_700_000_000_000  # flat: stamped at receipt


def test_mqtt_pass_through_acknowledges_after_buffering(mosquitto, buffer):
    config = MqttPassThroughConfig(
        kind="mqtt_passthrough",
        name="local",
        url=f"mqtt://127.0.0.1:{mosquitto.port}",
        username=READER,
        password=READER_PASSWORD,
        topic="site/+/telemetry",
    )
    source = MqttPassThrough(config, buffer)
    source.start()
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    publisher.username_pw_set(GATEWAY, GATEWAY_PASSWORD)
    publisher.connect("127.0.0.1", mosquitto.port)
    publisher.loop_start()
    try:
        assert wait_until(lambda: source.client.is_connected(), timeout=5)
        time.sleep(0.3)  # the subscription
        infos = [
            publisher.publish(
                "site/plc-7/telemetry", json.dumps({"ts": 1_700_000_000_000 + i, "values": {"p": i}}), qos=1
            )
            for i in range(20)
        ]
        infos.append(publisher.publish("site/plc-7/telemetry", b"not json", qos=1))
        for info in infos:
            info.wait_for_publish(5)
        assert wait_until(lambda: buffer.stats().depth == 20, timeout=5)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        source.stop()
    assert {b.reading.device for b in buffer.oldest(50)} == {"plc-7"} and source.invalid == 1


def _write_config(tmp_path, modbus, sink):
    path = tmp_path / "agent.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "buffer": {"path": "buffer.sqlite3"},
                "sink": sink,
                "sources": [
                    {
                        "kind": "modbus_tcp",
                        "name": "plant",
                        "host": "127.0.0.1",
                        "port": modbus.port,
                        "devices": [
                            {"uid": "fm-1", "unit_id": 1, "map": "nivus_flow"},
                            {"uid": "em-1", "unit_id": 2, "map": "energy_meter_3p"},
                        ],
                    }
                ],
            }
        )
    )
    return path


def test_check_prints_the_plan_and_proves_the_connections(tmp_path, modbus, ingest, capsys):
    path = _write_config(tmp_path, modbus, {"kind": "http", "url": ingest.url, "api_key": ingest.key})
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "device fm-1 (unit 1, map nivus_flow)" in out
    assert "every 1 s, 1 request: flow_rate, flow_velocity_ms, level_m, water_temp" in out
    assert "input 0..7  ok" in out and "HTTP" in out and "check passed" in out
    # The energy meter's phases: read through their holes (the map's max_gap), the frequency apart.
    assert "every 1 s, 2 requests" in out and "holding 19000..19027  ok" in out

    bad = _write_config(tmp_path, modbus, {"kind": "http", "url": ingest.url, "api_key": "fwk_wrong"})
    assert main(["check", "--config", str(bad)]) == 1
    assert "sink FAILED" in capsys.readouterr().out


def test_check_refuses_an_invalid_config(tmp_path, capsys):
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({"sink": {"kind": "mqtt", "uid": "gw 1"}}))
    assert main(["check", "--config", str(path), "--offline"]) == 2
    assert "String should match pattern" in capsys.readouterr().err


def test_status_reports_depth_oldest_and_last_send(tmp_path, capsys):
    buffer = Buffer(tmp_path / "buffer.sqlite3")
    from fieldwatch_agent.buffer import Reading

    buffer.append([Reading("fm-1", 1_700_000_000_000, {"v": 1}), Reading("fm-1", 1_700_000_001_000, {"v": 2})])
    buffer.acknowledge([buffer.oldest(1)[0].id])
    buffer.close()
    assert main(["status", "--buffer", str(tmp_path / "buffer.sqlite3"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["depth"] == 1 and report["sent_total"] == 1 and report["last_send"]
    assert report["oldest_reading_ts"].startswith("2023-11-14T22:13:21")


def test_probe_finds_the_word_order(tmp_path, modbus, ingest, capsys):
    modbus.set_value("input", 0, 37.5, "float32", "CDAB", unit=1)  # flow_rate, range 0..100 m³/h in the map
    path = _write_config(tmp_path, modbus, {"kind": "http", "url": ingest.url, "api_key": ingest.key})
    assert main(["probe", "--config", str(path), "--device", "fm-1", "--register", "0"]) == 0
    out = capsys.readouterr().out
    assert "(flow_rate) as float32" in out and "order: CDAB" in out
    # An unmapped register: type and range from the command line.
    modbus.set_value("holding", 300, 1234567, "int32", "DCBA", unit=1)
    args = [
        "probe",
        "--config",
        str(path),
        "--device",
        "fm-1",
        "--register",
        "300",
        "--table",
        "holding",
        "--type",
        "int32",
        "--min",
        "0",
        "--max",
        "10000000",
    ]
    assert main(args) == 0
    assert "order: DCBA" in capsys.readouterr().out


def test_free_port_helper_is_not_1883():
    assert free_port() != 1883


def test_the_example_config_is_valid(capsys):
    example = Path(__file__).resolve().parents[1] / "agent.example.yaml"
    assert main(["check", "--offline", "--config", str(example)]) == 0
    assert "device fm-a-001 (unit 1, map nivus_flow)" in capsys.readouterr().out
