"""The agent's health: counters the pollers and the forwarder keep, and the heartbeat that reports them.

The heartbeat is a reading like any other - of the device the config names for the gateway itself - so it goes
through the buffer too: after an outage the platform receives the heartbeats of the outage, showing when the
backlog built up and how it drained.
"""

import re
import threading
import time
from collections import deque

from fieldwatch_agent.buffer import Buffer, Reading, now_millis
from fieldwatch_agent.config import HeartbeatConfig

_NOT_METRIC = re.compile(r"[^a-z0-9_]+")


def metric_suffix(uid: str) -> str:
    """A device uid as part of a Fieldwatch metric key: lower-case, ``_`` for anything else (``fm-a-001`` ->
    ``fm_a_001``), clipped so ``agent_poll_errors_<suffix>`` stays within 63 characters."""
    return _NOT_METRIC.sub("_", uid.lower()).strip("_")[:45] or "device"


class Health:
    """Thread-safe counters: poll errors per device, polls, sends (for a rate over the last minute)."""

    SEND_WINDOW_S = 60.0

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self.poll_errors: dict[str, int] = {}
        self.polls: dict[str, int] = {}
        self.failing: dict[str, str] = {}  # device -> last error, while its last poll failed
        self._sends: deque[tuple[float, int]] = deque()
        self.sent_total = 0
        self.send_errors = 0
        self.last_send_error: str | None = None

    def register_device(self, uid: str) -> None:
        with self._lock:
            self.poll_errors.setdefault(uid, 0)
            self.polls.setdefault(uid, 0)

    def record_poll(self, uid: str, errors: int, last_error: str | None = None) -> None:
        with self._lock:
            self.polls[uid] = self.polls.get(uid, 0) + 1
            self.poll_errors[uid] = self.poll_errors.get(uid, 0) + errors
            if errors:
                self.failing[uid] = last_error or "error"
            else:
                self.failing.pop(uid, None)

    def record_send(self, delivered: int, seconds: float) -> None:
        with self._lock:
            self.sent_total += delivered
            self._sends.append((self.clock(), delivered))
            self._trim()

    def record_send_error(self, error: str) -> None:
        with self._lock:
            self.send_errors += 1
            self.last_send_error = error

    def send_rate(self) -> float:
        """Readings delivered per second over the last minute."""
        with self._lock:
            self._trim()
            return sum(count for _, count in self._sends) / self.SEND_WINDOW_S

    def _trim(self) -> None:
        horizon = self.clock() - self.SEND_WINDOW_S
        while self._sends and self._sends[0][0] < horizon:
            self._sends.popleft()


def heartbeat_reading(buffer: Buffer, health: Health, config: HeartbeatConfig) -> Reading:
    stats = buffer.stats()
    now = now_millis()
    values: dict[str, float | int | bool] = {
        "agent_buffer_depth": stats.depth,
        "agent_buffer_oldest_age_s": round(stats.oldest_age_s(now), 3),
        "agent_buffer_bytes": stats.bytes_in_use,
        "agent_buffer_dropped_total": stats.dropped_total,
        "agent_refused_total": stats.refused_total,
        "agent_sent_total": stats.sent_total,
        "agent_send_rate": round(health.send_rate(), 3),
        "agent_send_errors": health.send_errors,
        "agent_poll_errors": sum(health.poll_errors.values()),
        "agent_devices_failing": len(health.failing),
    }
    if config.per_device_errors:
        for uid, errors in sorted(health.poll_errors.items()):
            values[f"agent_poll_errors_{metric_suffix(uid)}"] = errors
    return Reading(config.device, now, values)


class Heartbeat(threading.Thread):
    def __init__(self, buffer: Buffer, health: Health, config: HeartbeatConfig, stop: threading.Event):
        super().__init__(name="heartbeat", daemon=True)
        self.buffer, self.health, self.config, self.stop_event = buffer, health, config, stop

    def run(self) -> None:
        # One at start: a restart shows on the platform as a beat, with the backlog the agent came back to.
        while True:
            self.buffer.append([heartbeat_reading(self.buffer, self.health, self.config)])
            if self.stop_event.wait(self.config.interval_s):
                break
