"""The forwarder: drains the buffer into the sink, live readings first, the backlog oldest first at a bounded rate.

Each round takes (a) every *live* row - buffered within ``live_window_s`` - so the dashboard keeps moving while
an outage's backlog drains, and (b) as many *backlog* rows, oldest first, as the drain rate's token bucket allows.
The sink says which rows the platform has; only those are deleted. On error it backs off exponentially (or as long
as a Retry-After asks) and tries again with whatever is still in the buffer - which is everything not delivered.
"""

import logging
import threading
import time

from fieldwatch_agent.buffer import Buffer, BufferedReading, now_millis
from fieldwatch_agent.config import ForwardingConfig
from fieldwatch_agent.health import Health
from fieldwatch_agent.sinks import HttpSink, MqttSink

log = logging.getLogger(__name__)


class DrainBudget:
    """A token bucket of backlog readings: ``rate`` per second, at most one second's worth saved up."""

    def __init__(self, rate: float, clock=time.monotonic):
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self.clock = clock
        self.tokens = self.capacity
        self.updated = clock()

    def available(self) -> int:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return int(self.tokens)

    def spend(self, count: int) -> None:
        self.tokens -= count

    def seconds_until_one(self) -> float:
        return max(0.0, (1 - self.tokens) / self.rate)


class Forwarder(threading.Thread):
    def __init__(
        self,
        buffer: Buffer,
        sink: MqttSink | HttpSink,
        config: ForwardingConfig,
        health: Health,
        stop: threading.Event,
        *,
        batch_limit: int,
    ):
        super().__init__(name="forwarder", daemon=True)
        self.buffer = buffer
        self.sink = sink
        self.config = config
        self.health = health
        self.stop_event = stop
        self.batch_limit = batch_limit
        self.budget = DrainBudget(config.drain_rate)
        self._pause: float | None = None  # the platform's Retry-After of the last round, if any
        self.healthy = True  # the last round delivered everything it sent

    def next_batch(self) -> tuple[list[BufferedReading], list[BufferedReading]]:
        """Backlog rows the budget allows (oldest first), and the live rows."""
        live_since = now_millis() - int(self.config.live_window_s * 1000)
        allowed = min(self.budget.available(), self.batch_limit)
        backlog = self.buffer.oldest(allowed, buffered_before_ms=live_since)
        self.budget.spend(len(backlog))
        live = self.buffer.live(self.batch_limit, buffered_since_ms=live_since)
        return backlog, live

    def run(self) -> None:
        delay = self.config.retry_min_s
        try:
            while not self.stop_event.is_set():
                backlog, live = self.next_batch()
                if not backlog and not live:
                    self.buffer.wait_for_append(min(1.0, max(0.05, self.budget.seconds_until_one())))
                    continue
                if not backlog and len(live) < self.batch_limit and self.config.linger_s:
                    # Let a few more polls land: one message for a fraction of a second of readings, not one each.
                    if self.stop_event.wait(self.config.linger_s):
                        break
                    backlog, live = self.next_batch()
                if not self.send(backlog + live):
                    self.stop_event.wait(self._pause or delay)
                    delay = min(delay * 2, self.config.retry_max_s)
                else:
                    delay = self.config.retry_min_s
        finally:
            self.sink.close()

    def send(self, batch: list[BufferedReading]) -> bool:
        """One round trip; True when everything in ``batch`` was settled."""
        started = time.monotonic()
        outcome = self.sink.send(batch)
        if outcome.delivered:
            self.buffer.acknowledge(outcome.delivered)
        if outcome.refused:
            for reason in {reason for _, reason in outcome.refused}:
                log.error("the platform refused readings for good (%s); kept in the buffer's refused table", reason)
            by_reason: dict[str, list[BufferedReading]] = {}
            for item, reason in outcome.refused:
                by_reason.setdefault(reason, []).append(item)
            for reason, items in by_reason.items():
                self.buffer.refuse(items, reason)
        self.buffer.count_refused_values(outcome.refused_values)
        self.health.record_send(len(outcome.delivered), time.monotonic() - started)
        self._pause = outcome.retry_after
        self.healthy = outcome.error is None
        if outcome.error:
            self.health.record_send_error(outcome.error)
            log.warning(
                "send failed, %d of %d readings kept for a retry: %s",
                len(batch) - len(outcome.delivered) - len(outcome.refused),
                len(batch),
                outcome.error,
            )
            return False
        return True


def batch_limit_for(sink: MqttSink | HttpSink) -> int:
    """Rows per round: a full in-flight window over MQTT, one request over HTTP."""
    if isinstance(sink, MqttSink):
        return sink.config.readings_per_message * sink.config.inflight_messages
    return sink.config.readings_per_request
