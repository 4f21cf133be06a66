"""Two listeners on one host under one MQTT client id would knock each other off the broker at every reconnect: the
second refuses to start, saying why, and a listener restarted right after a crash is never refused."""

import uuid

import pytest

from tests.support.mqtt import listener
from tests.support.processes import database_url, manage

pytestmark = pytest.mark.e2e


def test_a_second_listener_under_the_same_client_id_refuses_to_start(broker, transactional_db):
    client_id = f"dup-{uuid.uuid4().hex[:8]}"
    first = listener(broker.url, "fwdup", database_url(), client_id).start()
    try:
        with pytest.raises(AssertionError) as refused:
            manage(
                "mqtt_listen", "--client-id", client_id, database_url=database_url(), MQTT_URL=broker.url, timeout=30
            )
        assert "exited 1" in str(refused.value)
        assert f"another listener on this host is running as MQTT client '{client_id}'" in str(refused.value)
        assert first.process.poll() is None  # the first one is untouched

        first.kill()
        again = listener(broker.url, "fwdup", database_url(), client_id).start()  # not refused after a crash
        again.terminate()
        again.close()
    finally:
        first.close()
