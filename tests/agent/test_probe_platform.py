"""``fieldwatch-agent probe`` takes the plausible range from the device's type in a real Fieldwatch (uvicorn serving
the registry API, a personal read token), so a technician finds a new meter's word order without typing a range:
a flow rate stored CDAB on a real Modbus TCP server is found as CDAB. A gateway key, or a token of another site, is
told apart with a clear error and nothing is probed."""

import os
import struct
import subprocess
import sys
import uuid

import pytest
import yaml
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock

from apps.devices.services import api_key_issue
from apps.users.services import api_token_create
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory
from tests.support.modbus import ModbusMeter
from tests.support.processes import database_url
from tests.support.web_server import WebServer

pytestmark = pytest.mark.e2e

FLOW = 123.4  # m³/h, inside Fieldwatch's 0..500 in one word order only


def _cdab(value: float) -> list[int]:
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return [low, high]


@pytest.fixture
def platform(transactional_db, site_a):
    flow_meter = DeviceTypeFactory(organization=site_a.organization, name="Flow transmitter")
    MetricDefinitionFactory(device_type=flow_meter, key="flow_rate", unit="m³/h", min_value=0, max_value=500)
    DeviceFactory(uid="fm-probe", site=site_a, device_type=flow_meter)
    server = WebServer(
        {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.support.settings_browser",
            "DATABASE_URL": database_url(),
            "CHANNELS_PREFIX": f"fw-probe-{uuid.uuid4().hex[:8]}",
            "CACHE_KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "fw-test"),
        }
    )
    server.start()
    yield server
    server.close()


@pytest.fixture
def meter():
    registers = [0] * 10 + _cdab(FLOW) + [0] * 4
    meter = ModbusMeter({1: ModbusDeviceContext(hr=ModbusSequentialDataBlock(1, registers))})
    yield meter
    meter.close()


def _config(tmp_path, meter) -> str:
    # The map guesses the word order wrong (ABCD) and knows no range: the probe has to find both elsewhere.
    (tmp_path / "flow.yaml").write_text(
        yaml.safe_dump(
            {
                "model": "flow",
                "poll_groups": [
                    {"name": "fast", "interval_s": 1, "registers": [{"metric": "flow_rate", "address": 10}]}
                ],
            }
        )
    )
    config = {
        "buffer": {"path": str(tmp_path / "buffer.sqlite3")},
        "sink": {"kind": "http", "url": "http://127.0.0.1:9/api/v1/ingest", "api_key": "fwk_unused"},
        "sources": [
            {
                "kind": "modbus_tcp",
                "name": "meter",
                "host": "127.0.0.1",
                "port": meter.port,
                "devices": [{"uid": "fm-probe", "unit_id": 1, "map": "flow.yaml"}],
            }
        ],
    }
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(config))
    return str(tmp_path / "agent.yaml")


def _probe(config: str, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "fieldwatch_agent", "probe", "--config", config, "--device", "fm-probe"]
    return subprocess.run([*command, "--register", "10", *extra], capture_output=True, text=True, timeout=60)


def _token_file(tmp_path, token: str) -> str:
    path = tmp_path / f"token-{uuid.uuid4().hex[:6]}"
    path.write_text(token + "\n")
    return str(path)


def test_probe_finds_the_word_order_with_the_range_of_the_device_type_in_fieldwatch(platform, meter, bob, tmp_path):
    config = _config(tmp_path, meter)
    without = _probe(config)
    assert without.returncode == 1, without.stdout + without.stderr  # no range: more than one order "fits"
    assert "ambiguous" in without.stdout

    token = _token_file(tmp_path, api_token_create(user=bob, name="probe")[1])
    found = _probe(config, "--platform", platform.url, "--token-file", token)
    assert found.returncode == 0, found.stdout + found.stderr
    assert "plausible range: 0.0 .. 500.0 (from Fieldwatch's device type of fm-probe)" in found.stdout
    assert "order: CDAB" in found.stdout
    assert f"{FLOW:.1f}" in next(line for line in found.stdout.splitlines() if line.strip().startswith("CDAB"))


def test_probe_refuses_a_gateway_key_and_a_token_of_another_site(platform, meter, carol, site_a, tmp_path):
    config = _config(tmp_path, meter)
    gateway_key = api_key_issue(gateway=GatewayFactory(site=site_a), name="gw")[1]
    refused = _probe(config, "--platform", platform.url, "--token-file", _token_file(tmp_path, gateway_key))
    assert refused.returncode == 2
    assert "Fieldwatch refused the token (401)" in refused.stderr and "read scope" in refused.stderr

    other_site = _token_file(tmp_path, api_token_create(user=carol, name="probe")[1])  # carol views site B only
    hidden = _probe(config, "--platform", platform.url, "--token-file", other_site)
    assert hidden.returncode == 2
    assert "Fieldwatch has no device fm-probe this token may see (404)" in hidden.stderr
    assert "order:" not in hidden.stdout
