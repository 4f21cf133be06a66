"""Sinks against real servers: a Mosquitto that requires a login (PUBACK = delivered, anything else = kept) and an
ingest endpoint answering as the platform does (202, 413, 400, 401, 429 with Retry-After)."""

import pytest
from agent_servers import Mosquitto, Recorder, wait_until
from fieldwatch_agent.buffer import Buffer, Reading
from fieldwatch_agent.config import HttpSinkConfig, MqttSinkConfig
from fieldwatch_agent.sinks import HttpSink, MqttSink

from conftest import GATEWAY, GATEWAY_PASSWORD, READER, READER_PASSWORD


@pytest.fixture
def buffer(tmp_path):
    buffer = Buffer(tmp_path / "b.sqlite3")
    yield buffer
    buffer.close()


def _fill(buffer, count, devices=("fm-1", "em-1")):
    buffer.append(Reading(devices[i % len(devices)], 1_700_000_000_000 + i, {"v": i}) for i in range(count))
    return buffer.oldest(count)


def _mqtt(port, **overrides):
    settings = {
        "kind": "mqtt",
        "url": f"mqtt://127.0.0.1:{port}",
        "uid": GATEWAY,
        "password": GATEWAY_PASSWORD,
        "readings_per_message": 100,
        "ack_timeout_s": 5,
        **overrides,
    }
    return MqttSink(MqttSinkConfig.model_validate(settings))


def test_mqtt_delivers_on_puback_as_gateway_payloads(mosquitto, buffer):
    recorder = Recorder(mosquitto, READER, READER_PASSWORD)
    sink = _mqtt(mosquitto.port)
    batch = _fill(buffer, 1050)
    outcome = sink.send(batch)
    assert outcome.error is None and sorted(outcome.delivered) == [b.id for b in batch]
    assert wait_until(lambda: len(recorder.readings()) == 1050)
    topics = {topic for topic, _ in recorder.messages}
    assert topics == {f"fieldwatch/gateways/{GATEWAY}/telemetry"}
    assert len(recorder.messages) == 11  # 100 readings per message
    assert sorted(ts for _, ts, _ in recorder.readings()) == [b.reading.ts for b in batch]
    sink.close()
    recorder.close()


def test_mqtt_wrong_password_delivers_nothing(mosquitto, buffer):
    outcome = _mqtt(mosquitto.port, password="wrong").send(_fill(buffer, 5))
    assert outcome.delivered == [] and "refused the login" in outcome.error


def test_mqtt_broker_down_then_back(mosquitto, buffer):
    sink = _mqtt(mosquitto.port)
    batch = _fill(buffer, 10)
    mosquitto.stop()
    outcome = sink.send(batch)
    assert outcome.delivered == [] and "cannot reach" in outcome.error
    mosquitto.start()
    assert sorted(sink.send(batch).delivered) == [b.id for b in batch]
    sink.close()


def test_mqtt_acl_refusal_is_not_delivery(tmp_path, buffer):
    """MQTT 5: the broker acknowledges a message its ACL refuses with reason 0x87; the rows stay in the buffer."""
    acl = f"user {GATEWAY}\ntopic write fieldwatch/gateways/{GATEWAY}/telemetry\n"
    broker = Mosquitto({GATEWAY: GATEWAY_PASSWORD}, acl=acl).start()
    try:
        allowed = _mqtt(broker.port).send(_fill(buffer, 3))
        assert len(allowed.delivered) == 3
        refused = _mqtt(broker.port, topic_prefix="elsewhere").send(buffer.oldest(10))
        assert refused.delivered == [] and "refused a message" in refused.error
    finally:
        broker.close()


def _http(ingest, **overrides):
    settings = {"kind": "http", "url": ingest.url, "api_key": ingest.key, "readings_per_request": 1000, **overrides}
    return HttpSink(HttpSinkConfig.model_validate(settings))


def test_http_202_delivers(ingest, buffer):
    batch = _fill(buffer, 2500)
    outcome = _http(ingest).send(batch)
    assert outcome.error is None and sorted(outcome.delivered) == [b.id for b in batch]
    assert [readings for _, readings in ingest.requests] == [1000, 1000, 500]
    assert sorted(ts for _, ts, _ in ingest.readings()) == [b.reading.ts for b in batch]


def test_http_429_keeps_the_rest_and_pauses_as_asked(ingest, buffer):
    ingest.script = [
        (202, {}, {"accepted": 1000, "rejected": 0}),
        (429, {"Retry-After": "7"}, {"reason": "rate_limited"}),
    ]
    outcome = _http(ingest).send(_fill(buffer, 2500))
    assert len(outcome.delivered) == 1000 and outcome.retry_after == 7.0 and "429" in outcome.error


def test_http_413_halves_until_it_fits(ingest, buffer):
    ingest.script = [(413, {}, {"reason": "too_large"})]
    outcome = _http(ingest).send(_fill(buffer, 1000))
    assert len(outcome.delivered) == 1000
    assert ingest.requests == [(413, 1000), (202, 500), (202, 500)]


def test_http_400_isolates_the_bad_reading(ingest, buffer):
    batch = _fill(buffer, 4)
    poisoned = batch[2].reading.ts

    def judge(body):
        has_poison = any(item["ts"] == poisoned for items in body.values() for item in items)
        if has_poison:
            return 400, {}, {"reason": "invalid_shape", "detail": "bad"}
        ingest.accepted.append(body)
        return 202, {}, {"accepted": 1, "rejected": 0}

    ingest.script = [(0, {}, judge)] * 10
    outcome = _http(ingest).send(batch)
    assert sorted(outcome.delivered) == sorted(b.id for b in batch if b.reading.ts != poisoned)
    assert [(item.reading.ts, reason) for item, reason in outcome.refused] == [(poisoned, "400 invalid_shape: bad")]


def test_http_202_with_refused_values_counts_them(ingest, buffer):
    errors = [{"index": 0, "reason": "out_of_range", "detail": "200 > 100"}]
    ingest.script = [(202, {}, {"accepted": 1, "rejected": 1, "errors": errors})]
    outcome = _http(ingest).send(_fill(buffer, 2))
    assert len(outcome.delivered) == 2 and outcome.refused_values == 1


def test_http_wrong_key_keeps_everything(ingest, buffer):
    outcome = _http(ingest, api_key="fwk_wrong").send(_fill(buffer, 3))
    assert outcome.delivered == [] and "401" in outcome.error


def test_http_unreachable_keeps_everything(buffer):
    sink = _http(type("Nowhere", (), {"url": "http://127.0.0.1:1/api/v1/ingest", "key": "k"}), timeout_s=2)
    outcome = sink.send(_fill(buffer, 3))
    assert outcome.delivered == [] and outcome.error
