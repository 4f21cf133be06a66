"""Fixtures of the agent's tests: real servers on free loopback ports (agent_servers), never the machine's 1883.

The agent knows nothing of Django; these tests run under the project's pytest configuration (pytest-django is
loaded for every path) but ask for no database, so none is set up for them.
"""

import pytest
from agent_servers import IngestStub, ModbusServer, Mosquitto

GATEWAY = "gw-test"
GATEWAY_PASSWORD = "gateway-secret"
READER = "recorder"
READER_PASSWORD = "recorder-secret"


@pytest.fixture
def modbus():
    server = ModbusServer(units=(1, 2, 3)).start()
    yield server
    server.stop()


@pytest.fixture
def mosquitto():
    broker = Mosquitto({GATEWAY: GATEWAY_PASSWORD, READER: READER_PASSWORD}).start()
    yield broker
    broker.close()


@pytest.fixture
def ingest():
    stub = IngestStub()
    yield stub
    stub.close()
