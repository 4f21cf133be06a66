"""Live fan-out: committed readings and alert transitions -> channel groups ``site.<id>`` and ``device.<id>``; an
export job's progress -> its owner's group ``exports.<user id>``.

Fed by signals (``apps.dashboard.receivers``): telemetry's ``readings_committed`` and ``export_progressed`` and
alerts' ``alerts_changed``, all after commit, never by polling the database. Two parts:

* ``Coalescer`` (pure, clock-injected, unit-tested without threads): per key (a device's latest values, a device's
  status, an alert) it keeps only the newest pending message and releases a key at most once per ``interval`` -
  the issue's "at most one update per device per second per client", decided once here for every client. A value
  is never withheld longer than ``interval``: the sender wakes up when the next key falls due.
* ``LivePublisher``: one daemon thread per process running its own asyncio loop, which owns the channel layer's
  Redis connections and does the ``group_send`` calls. The receivers only hand their batch over (O(1), no I/O);
  that thread merges it into the coalescer (O(batch), in a worker thread, in hand-over order), so neither a slow
  Redis nor the per-reading merge holds back a flush. What piles up is bounded by the number of devices and alerts
  (one pending entry each: drop-oldest per key, the newest value is all that matters) plus ``HANDOVER_LIMIT``
  batches not merged yet; beyond that the caller merges on its own thread.

Message shapes (the websocket protocol; a frame holds one message object, or an array of them when several were
due for the same group at once):
``{"type": "latest", "device": uid, "values": {metric: [ts_ms, value]}}``,
``{"type": "status", "device": uid, "status": "online"|"offline", "last_seen": ts_ms, "previous": ...}``,
``{"type": "alert", "alert": {"id", "status", "severity", "message", "device", "site", "opened_at"}}``,
``{"type": "export", "export": {...}}`` (the job as ``GET /api/v1/exports/<id>`` answers it).
"""

import asyncio
import collections
import contextlib
import datetime
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db.models import F
from django.utils import timezone

from apps.alerts.models import Alert
from apps.core.time import epoch_ms
from apps.core.versioned import CACHE_ERRORS, VersionedSnapshot
from apps.devices.models import Device
from apps.telemetry.api.export_serializers import ExportJobSerializer
from apps.telemetry.choices import ExportStatus
from apps.telemetry.ingest.directory import CATALOGUE_VERSION
from apps.telemetry.ingest.records import CommittedReading
from apps.telemetry.models import ExportJob

logger = logging.getLogger(__name__)

COALESCE_SECONDS = 1.0
# Operations (committed batches, statuses, alerts) the sender thread may fall behind by before callers catch up.
HANDOVER_LIMIT = 64
# The channel-layer message type; LiveConsumer.live_message forwards its ``text`` (JSON) to the browser.
LIVE_EVENT = "live.message"


def site_group(site_id: int) -> str:
    return f"site.{site_id}"


def device_group(device_id: int) -> str:
    return f"device.{device_id}"


def export_group(user_id: int) -> str:
    """One user's export jobs: only that user's own sockets join it (``LiveConsumer``, from the session's user)."""
    return f"exports.{user_id}"


# ---------------------------------------------------------------------------------------------------------------------
# Coalescing (pure)
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Pending:
    groups: tuple[str, ...]
    message: dict


@dataclass
class Coalescer:
    """Newest pending message per key, released at most once per ``interval`` per key.

    ``merge(old, new)`` combines two pending messages of one key (latest values: newest value per metric); without
    it the newer message replaces the older one.
    """

    interval: float = COALESCE_SECONDS
    clock: Callable[[], float] = time.monotonic
    pending: dict = field(default_factory=dict)
    last_sent: dict = field(default_factory=dict)

    def put(self, key, groups: tuple[str, ...], message: dict, merge: Callable[[dict, dict], dict] | None = None):
        current = self.pending.get(key)
        if current is not None and merge is not None:
            message = merge(current.message, message)
        self.pending[key] = Pending(groups, message)

    def take_due(self) -> tuple[list[Pending], float | None]:
        """The messages whose key may be sent now, and in how many seconds the next pending key falls due."""
        now = self.clock()
        due, wait = [], None
        for key in list(self.pending):
            sent = self.last_sent.get(key)
            if sent is None or now - sent >= self.interval:
                due.append(self.pending.pop(key))
                self.last_sent[key] = now
            else:
                remaining = self.interval - (now - sent)
                wait = remaining if wait is None else min(wait, remaining)
        if len(self.last_sent) > 4 * max(len(self.pending), 1024):  # forget keys idle for longer than the interval
            self.last_sent = {k: t for k, t in self.last_sent.items() if now - t < self.interval}
        return due, wait


def merge_latest(old: dict, new: dict) -> dict:
    """Two pending ``latest`` messages of a device: the newer reading (by timestamp) of each metric wins."""
    values = dict(old["values"])
    for metric, (ts_ms, value) in new["values"].items():
        if metric not in values or values[metric][0] <= ts_ms:
            values[metric] = [ts_ms, value]
    return {**new, "values": values}


# ---------------------------------------------------------------------------------------------------------------------
# Which device is where (in-process, refreshed with the ingest catalogue's version)
# ---------------------------------------------------------------------------------------------------------------------


class DeviceInfo(NamedTuple):
    uid: str
    site_id: int
    offline_after: float  # seconds


class LiveDirectory(VersionedSnapshot):
    """device id -> (uid, site, offline timeout) for every device, and each device's last_seen when loaded.

    The fan-out needs a device's uid and site per reading without a query; the catalogue signals bump the same
    version the ingest directory follows, so a moved or new device is picked up within a second.
    """

    version_key = CATALOGUE_VERSION

    def __init__(self, **freshness):
        super().__init__(**freshness)
        self._devices: dict[int, DeviceInfo] = {}
        self.loaded_last_seen: dict[int, float] = {}

    def get(self, device_id: int) -> DeviceInfo | None:
        self.refresh_if_stale()
        return self._devices.get(device_id)

    def _load(self) -> str:
        rows = Device.objects.values_list("id", "uid", "site_id", "device_type__offline_after", "last_seen")
        devices, last_seen = {}, {}
        for device_id, uid, site_id, offline_after, seen in rows:
            devices[device_id] = DeviceInfo(uid, site_id, offline_after.total_seconds())
            if seen is not None:
                last_seen[device_id] = seen.timestamp()
        self._devices, self.loaded_last_seen = devices, last_seen
        return f"{len(devices)} devices for live updates"


# ---------------------------------------------------------------------------------------------------------------------
# The publisher: hook side (any thread) and sender side (its own thread and event loop)
# ---------------------------------------------------------------------------------------------------------------------


class LivePublisher:
    """Coalesces live messages and sends them to the channel layer from a background thread."""

    def __init__(self, *, interval: float = COALESCE_SECONDS, directory: LiveDirectory | None = None):
        self.coalescer = Coalescer(interval=interval)
        self.directory = directory or LiveDirectory()
        self._lock = threading.Lock()
        self._apply_lock = threading.Lock()
        self._handed_over: collections.deque[tuple[Callable, tuple]] = collections.deque()
        self._seen: dict[int, float] = {}  # device id -> wall-clock time this process last saw it report
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._started = threading.Event()
        self._closing = False
        # None: decided on first use - no thread with the in-memory layer (its queues belong to the consumers' event
        # loop, so tests drive ``send_due`` on that loop themselves); True/False: forced.
        self.background: bool | None = None
        self.sent = 0  # messages handed to the channel layer (for tests and the benchmark)
        self.failed = 0

    # --- hook side -----------------------------------------------------------------------------------------------
    # What the signals hand over is only queued here: the merging (per reading) runs on the sender's side, off the
    # committing thread (the listener's critical path), in the order it was handed over.
    def readings(self, readings: Iterable[CommittedReading]) -> None:
        """A committed batch: merged (see ``_readings_merge``) on the sender's side."""
        self._hand_over(self._readings_merge, readings)

    def seen(self, device_id: int, at: float | None) -> None:
        """What this process knows of a device's last report: ``at`` (a birth), or None for "offline now" (a death),
        so that its next reading is announced as ``status: online``."""
        self._hand_over(self._seen_set, device_id, at)

    def publish(self, key, groups: tuple[str, ...], message: dict) -> None:
        """Queue a message (status, alert) under ``key``: the newest one per key is sent, at most once a second."""
        self._hand_over(self._put, key, groups, message)

    def _hand_over(self, operation: Callable, *args) -> None:
        """Run ``operation(*args)`` after everything handed over before it: on the sender's side when it runs in
        the background, else here. A sender that fell ``HANDOVER_LIMIT`` operations behind has the caller catch
        up on its own thread, so what waits stays bounded."""
        with self._lock:
            self._handed_over.append((operation, args))
            backlog = len(self._handed_over)
        if not self._uses_thread() or backlog > HANDOVER_LIMIT:
            self._apply_handed_over()
        self._wake()

    def _apply_handed_over(self) -> None:
        # Only the holder of _apply_lock removes an operation, and only once it ran: a non-empty queue means work
        # in progress (what flush() waits for).
        with self._apply_lock:
            while self._handed_over:
                operation, args = self._handed_over[0]
                try:
                    operation(*args)
                except Exception:  # best effort, like every live update: the next one repairs it
                    logger.exception("live fan-out: merging an update failed")
                with self._lock:
                    self._handed_over.popleft()

    def _readings_merge(self, readings: Iterable[CommittedReading]) -> None:
        """Newest value per (device, metric) of a committed batch -> one pending ``latest`` per device; a device
        reporting after longer than its offline timeout also gets a ``status: online``."""
        per_device: dict[int, dict[str, list]] = {}
        for _, device_id, metric_key, ts, value in readings:
            values = per_device.setdefault(device_id, {})
            ts_ms = epoch_ms(ts)
            current = values.get(metric_key)
            if current is None or current[0] <= ts_ms:
                values[metric_key] = [ts_ms, value]
        if not per_device:
            return
        # Directory lookups (which may reload from the database) happen before taking the lock the sender shares.
        infos = {device_id: self.directory.get(device_id) for device_id in per_device}
        loaded_last_seen = self.directory.loaded_last_seen
        now = time.time()
        with self._lock:
            for device_id, values in per_device.items():
                info = infos[device_id]
                if info is None:
                    continue
                groups = (site_group(info.site_id), device_group(device_id))
                message = {"type": "latest", "device": info.uid, "values": values}
                self.coalescer.put(("latest", device_id), groups, message, merge_latest)
                previous = self._seen.get(device_id, loaded_last_seen.get(device_id))
                if previous is None or now - previous > info.offline_after:
                    status = {
                        "type": "status",
                        "device": info.uid,
                        "status": "online",
                        "last_seen": int(now * 1000),
                        "previous": "never_seen" if previous is None else "offline",
                    }
                    self.coalescer.put(("status", device_id), groups, status)
                self._seen[device_id] = now

    def _seen_set(self, device_id: int, at: float | None) -> None:
        with self._lock:
            self._seen[device_id] = at if at is not None else float("-inf")

    def _put(self, key, groups: tuple[str, ...], message: dict) -> None:
        with self._lock:
            self.coalescer.put(key, groups, message)

    # --- sender side ---------------------------------------------------------------------------------------------
    def _uses_thread(self) -> bool:
        if self.background is None:
            backend = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", "")
            self.background = bool(backend) and not backend.endswith("InMemoryChannelLayer")
        return self.background and not self._closing

    def _wake(self) -> None:
        if not self._uses_thread():
            return
        if self._thread is None or not self._thread.is_alive():
            self._start()
        loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed (interpreter exit)
                loop.call_soon_threadsafe(wakeup.set)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._started.clear()
            self._thread = threading.Thread(target=self._run, name="live-fanout", daemon=True)
            self._thread.start()
        self._started.wait(5)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._started.set()
        layer = get_channel_layer()
        while not self._closing:
            self._wakeup.clear()  # before looking: a put after this point sets it again, so no wake-up is lost
            wait = await self.send_due(layer)
            if wait == 0:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait if wait is not None else 5.0)

    async def send_due(self, layer) -> float | None:
        """Send every message that is due; return 0 if some were sent, else the seconds until the next is due."""
        if self._handed_over:
            # In a worker thread: merging may query the database (a stale directory), which Django refuses to do
            # in a thread running an event loop.
            await asyncio.to_thread(self._apply_handed_over)
        with self._lock:
            due, wait = self.coalescer.take_due()
        if not due:
            return wait
        if layer is not None:
            await self._send(layer, due)
        return 0

    async def _send(self, layer, due: list[Pending]) -> None:
        # One channel-layer message per group per round, carrying every due message of that group, encoded once:
        # consumers forward the text as one websocket frame (an object, or an array of objects when several), so
        # the web process does one receive and one frame per group and client instead of one per device.
        by_group: dict[str, list[dict]] = {}
        site_of: dict[str, str] = {}
        for item in due:
            for group in item.groups:
                by_group.setdefault(group, []).append(item.message)
                if group != item.groups[0]:
                    site_of[group] = item.groups[0]
        sends = []
        for group, messages in by_group.items():
            event = {"type": LIVE_EVENT, "text": json.dumps(messages[0] if len(messages) == 1 else messages)}
            if group in site_of:  # a device group: sockets joined to the device's site get these from there
                event["site_group"] = site_of[group]
            sends.append(layer.group_send(group, event))
        results = await asyncio.gather(*sends, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        self.sent += len(results) - len(errors)
        if errors:
            # Live updates are best effort: the page shows the stored state on the next load. Never retried: by
            # the time Redis is back, newer values have replaced these.
            self.failed += len(errors)
            logger.warning("live fan-out: %d of %d group sends failed: %r", len(errors), len(results), errors[0])

    def close(self, timeout: float = 5.0) -> None:
        """Stop the sender thread (tests; a process simply exits, the thread is a daemon)."""
        self._closing = True
        loop, wakeup, thread = self._loop, self._wakeup, self._thread
        if loop is not None and wakeup is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wakeup.set)
        if thread is not None:
            thread.join(timeout)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until nothing is pending (tests and the benchmark); True if drained in time."""
        if self.background is False:  # driven by the caller (tests): nothing will drain it meanwhile
            return not self.coalescer.pending
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                empty = not self.coalescer.pending and not self._handed_over
            if empty:
                return True
            self._wake()
            time.sleep(0.02)
        return False


publisher = LivePublisher()


# ---------------------------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------------------------


def readings_fanout(readings: list[CommittedReading]) -> None:
    """Coalesced ``latest`` (and ``online``) messages for a committed batch's devices."""
    publisher.readings(readings)


def alert_message(alert) -> dict:
    return {
        "type": "alert",
        "alert": {
            "id": alert.id,
            "status": alert.status,
            "severity": alert.severity,
            "message": alert.message,
            "device": alert.device.uid,
            "site": alert.device.site_id,
            "opened_at": alert.opened_at.isoformat(),
        },
    }


def alerts_fanout(alert_ids: list[int]) -> None:
    """Publish the current state of the given alerts to their site's and device's groups (one query). Called after
    the commit that changed them, so browsers never fetch an uncommitted state."""
    if not alert_ids:
        return
    for alert in (
        Alert.objects.filter(pk__in=alert_ids)
        .select_related("device")
        .only("id", "status", "severity", "message", "opened_at", "device__uid", "device__site_id")
    ):
        groups = (site_group(alert.device.site_id), device_group(alert.device_id))
        publisher.publish(("alert", alert.id), groups, alert_message(alert))


def export_fanout(*, export_id, user_id: int) -> None:
    """Publish an export job's stored state, in the export API's shape, to its owner's group only (one query). A
    finished job is sent before returning: the worker that ran it may have nothing else to send for a long time."""
    job = ExportJob.objects.filter(pk=export_id, user_id=user_id).first()
    if job is None:
        return
    message = {"type": "export", "export": ExportJobSerializer(job).data}
    publisher.publish(("export", job.pk), (export_group(user_id),), message)
    if job.status in (ExportStatus.DONE, ExportStatus.FAILED):
        publisher.flush(timeout=2.0)


def device_status_changed(*, device_id: int, uid: str, site_id: int, status: str, last_seen: float | None) -> None:
    """Publish an online/offline change (the beat job's offline transitions)."""
    message = {
        "type": "status",
        "device": uid,
        "status": status,
        "last_seen": int(last_seen * 1000) if last_seen is not None else None,
        "previous": "online" if status == "offline" else "offline",
    }
    publisher.publish(("status", device_id), (site_group(site_id), device_group(device_id)), message)


def devices_liveness_fanout(changes) -> None:
    """Publish the births and deaths devices announced themselves (``devices_liveness_changed``, Sparkplug), at
    once rather than at the offline beat. After a death, the device's next reading announces it online again."""
    for change in changes:
        status = "online" if change.online else "offline"
        device_status_changed(
            device_id=change.device_id, uid=change.uid, site_id=change.site_id, status=status, last_seen=change.at
        )
        publisher.seen(change.device_id, change.at if change.online else None)


# ---------------------------------------------------------------------------------------------------------------------
# Offline transitions (beat, every 15 s): nothing arrives when a device goes silent, so a clock has to notice
# ---------------------------------------------------------------------------------------------------------------------

OFFLINE_WATERMARK_KEY = "dashboard:offline-published-until"
OFFLINE_LOOKBACK = datetime.timedelta(minutes=10)  # after a beat outage, catch up on this much at most


def devices_offline_publish(*, now: datetime.datetime | None = None) -> int:
    """Publish ``status: offline`` for every active device whose ``last_seen + offline_after`` passed since the
    previous run (a watermark in the cache); one query. Returns how many were published."""

    now = now or timezone.now()
    since = now - OFFLINE_LOOKBACK
    try:
        stored = cache.get(OFFLINE_WATERMARK_KEY)
    except CACHE_ERRORS:
        stored = None
    if stored is not None:
        since = max(since, datetime.datetime.fromtimestamp(stored, tz=datetime.UTC))
    rows = (
        Device.objects.filter(is_active=True, last_seen__isnull=False, offline_since__isnull=True)
        .annotate(offline_at=F("last_seen") + F("device_type__offline_after"))
        .filter(offline_at__gt=since, offline_at__lte=now)
        .values_list("id", "uid", "site_id", "last_seen")
    )
    count = 0
    for device_id, uid, site_id, last_seen in rows:
        device_status_changed(
            device_id=device_id, uid=uid, site_id=site_id, status="offline", last_seen=last_seen.timestamp()
        )
        count += 1
    try:
        cache.set(OFFLINE_WATERMARK_KEY, now.timestamp(), timeout=None)
    except CACHE_ERRORS:
        logger.warning("could not store the offline watermark; the next run looks back %s", OFFLINE_LOOKBACK)
    if count:
        publisher.flush(timeout=2.0)
    return count
