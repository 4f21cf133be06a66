"""The forwarder: live readings keep flowing while an outage's backlog drains oldest first at the bounded rate."""

import threading
import time

import pytest
from agent_servers import wait_until
from fieldwatch_agent.buffer import Buffer, Reading
from fieldwatch_agent.config import ForwardingConfig, HttpSinkConfig
from fieldwatch_agent.forwarder import DrainBudget, Forwarder
from fieldwatch_agent.health import Health
from fieldwatch_agent.sinks import HttpSink


def test_drain_budget_refills_at_its_rate_and_saves_one_second_at_most():
    now = [0.0]
    budget = DrainBudget(100, clock=lambda: now[0])
    assert budget.available() == 100
    budget.spend(100)
    now[0] = 0.25
    assert budget.available() == 25
    now[0] = 60
    assert budget.available() == 100


@pytest.fixture
def buffer(tmp_path):
    buffer = Buffer(tmp_path / "b.sqlite3")
    yield buffer
    buffer.close()


def test_backlog_drains_at_the_bounded_rate_while_live_readings_flow(buffer, ingest):
    # An outage's backlog: 3000 readings buffered a minute ago.
    buffer.append(Reading("fm-1", 1_700_000_000_000 + i, {"seq": i}) for i in range(3000))
    buffer._db.execute("UPDATE reading SET buffered_ms = buffered_ms - 60000")
    sink = HttpSink(HttpSinkConfig(kind="http", url=ingest.url, api_key=ingest.key, readings_per_request=5000))
    config = ForwardingConfig(drain_rate=1000, live_window_s=5, linger_s=0.05, retry_min_s=0.1)
    stop = threading.Event()
    forwarder = Forwarder(buffer, sink, config, Health(), stop, batch_limit=5000)
    started = time.monotonic()
    forwarder.start()
    live_sent_at = {}
    for i in range(20):  # live polls at 10 per second meanwhile
        buffer.append([Reading("em-1", 1_800_000_000_000 + i, {"seq": i})])
        time.sleep(0.1)
        for device, ts, _ in ingest.readings():
            if device == "em-1":
                live_sent_at.setdefault(ts, time.monotonic() - started)
    assert wait_until(lambda: buffer.stats().depth == 0, timeout=20)
    drained_in = time.monotonic() - started
    stop.set()
    forwarder.join(5)

    backlog = [ts for device, ts, _ in ingest.readings() if device == "fm-1"]
    assert backlog == sorted(backlog) and len(backlog) == 3000  # oldest first, all of it, once
    assert drained_in >= 1.9  # 3000 at 1000/s with a second's burst: two seconds at least
    assert len(live_sent_at) >= 15 and max(live_sent_at.values()) < drained_in  # live ones did not wait for the backlog
    first_backlog_request = next(n for status, n in ingest.requests if status == 202)
    assert first_backlog_request <= 1000 + 20  # one second's budget plus the live readings


def test_errors_back_off_and_nothing_is_lost(buffer, ingest):
    buffer.append(Reading("fm-1", 1_700_000_000_000 + i, {"seq": i}) for i in range(50))
    ingest.script = [(503, {"Retry-After": "0.3"}, {"reason": "unavailable"}), (500, {}, {})]
    sink = HttpSink(HttpSinkConfig(kind="http", url=ingest.url, api_key=ingest.key))
    stop = threading.Event()
    health = Health()
    forwarder = Forwarder(buffer, sink, ForwardingConfig(retry_min_s=0.1, linger_s=0), health, stop, batch_limit=2000)
    forwarder.start()
    assert wait_until(lambda: buffer.stats().depth == 0, timeout=10)
    stop.set()
    forwarder.join(5)
    assert [status for status, _ in ingest.requests] == [503, 500, 202]
    assert health.send_errors == 2 and buffer.stats().sent_total == 50
