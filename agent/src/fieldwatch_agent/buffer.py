"""The store-and-forward buffer: every reading is committed to SQLite before anything tries to send it.

Guarantees, and what gives them:

* **Nothing acknowledged is lost on kill -9 or power loss.** WAL journal with ``synchronous=FULL``: a commit
  returns only after the WAL is fsynced; a killed process leaves a WAL that the next open replays.
  (``synchronous=normal`` trades the last commits on *power loss* for fewer fsyncs; a kill -9 still loses nothing.)
* **A reading leaves only when the platform has it.** Senders read rows and delete them by id after the PUBACK or
  the 202; a crash between the two resends them, which the platform absorbs (same device, metric and ts is a
  duplicate, not a second reading).
* **Oldest first.** Rows are ordered by an AUTOINCREMENT id: the order in which they were buffered.
* **Bounded.** After each write, when the pages in use pass ``max_bytes`` (or the rows pass ``max_readings``) the
  oldest rows are deleted: the newest data is what matters after a long outage. Each drop is counted in the
  database (``dropped_total``, surviving restarts) and logged; the heartbeat reports it.

One connection guarded by a lock serves the agent's threads (pollers, sender, heartbeat): SQLite has one writer
anyway, and a commit is short. ``fieldwatch-agent status`` reads the same file from another process (WAL lets it).
"""

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS reading (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids never reused, so id order is buffering order
    device TEXT NOT NULL,
    ts INTEGER NOT NULL,                   -- epoch milliseconds, as sent on the wire
    buffered_ms INTEGER NOT NULL,          -- when it was buffered: live vs backlog, and the oldest age
    payload TEXT NOT NULL                  -- the values object, as compact JSON
);
CREATE INDEX IF NOT EXISTS reading_buffered ON reading (buffered_ms);
CREATE TABLE IF NOT EXISTS counter (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refused (       -- readings the platform refused as a whole, kept for a look (bounded)
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    ts INTEGER NOT NULL,
    payload TEXT NOT NULL,
    reason TEXT NOT NULL,
    refused_ms INTEGER NOT NULL
);
"""

REFUSED_KEPT = 1000
# A drop deletes at least this share of the rows, so a full buffer does not pay a bound check and a delete per
# reading; it stays within the bound and frees room for a while.
DROP_FRACTION = 0.01


@dataclass(frozen=True, slots=True)
class Reading:
    """Values of one device at one instant: what a poll of a poll group produces, and what goes on the wire."""

    device: str
    ts: int  # epoch milliseconds
    values: dict[str, float | int | bool]


@dataclass(frozen=True, slots=True)
class BufferedReading:
    id: int
    buffered_ms: int
    reading: Reading


@dataclass(frozen=True)
class BufferStats:
    depth: int
    oldest_buffered_ms: int | None
    oldest_ts: int | None
    bytes_in_use: int
    file_bytes: int
    dropped_total: int
    sent_total: int
    refused_total: int
    last_send_ms: int | None

    def oldest_age_s(self, now_ms: int | None = None) -> float:
        if self.oldest_buffered_ms is None:
            return 0.0
        return max(0.0, ((now_ms or now_millis()) - self.oldest_buffered_ms) / 1000)


def now_millis() -> int:
    return time.time_ns() // 1_000_000


class Buffer:
    def __init__(
        self,
        path: Path | str,
        *,
        max_bytes: int = 256 * 1024**2,
        max_readings: int | None = None,
        synchronous: str = "full",
        read_only: bool = False,
    ):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_readings = max_readings
        self._lock = threading.Lock()
        self._appended = threading.Condition(self._lock)
        if read_only:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) below.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
            # A checkpoint truncates the WAL back to this size: its growth between checkpoints stays small.
            self._db.execute("PRAGMA journal_size_limit=4194304")
            self._db.executescript(SCHEMA)
        self._db.execute("PRAGMA busy_timeout=5000")
        self._page_size = self._db.execute("PRAGMA page_size").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- writing ------------------------------------------------------------------------------------------------

    def append(self, readings: Iterable[Reading]) -> int:
        """Commit ``readings`` (durably, per ``synchronous``), then enforce the bound. Returns how many were added."""
        now = now_millis()
        rows = [(r.device, r.ts, now, json.dumps(r.values, separators=(",", ":"))) for r in readings]
        if not rows:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO reading (device, ts, buffered_ms, payload) VALUES (?, ?, ?, ?)", rows)
                self._enforce_bound()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._appended.notify_all()
        return len(rows)

    def _enforce_bound(self) -> None:
        """Drop the oldest rows while the bound is passed (inside the caller's transaction).

        Cheap while under the bound: ``max(id) - min(id) + 1`` (two index probes) bounds the row count from above,
        so the O(n) ``count(*)`` runs only when the bound may have been passed.
        """
        dropped = 0
        for _ in range(200):  # each round drops >= 1% of the rows: the loop ends long before this
            depth = None
            excess = 0
            if self.max_readings is not None:
                low, high = self._db.execute("SELECT min(id), max(id) FROM reading").fetchone()
                if low is not None and high - low + 1 > self.max_readings:
                    depth = self._count()
                    excess = depth - self.max_readings
            if self._bytes_in_use() > self.max_bytes:
                depth = self._count() if depth is None else depth
                excess = max(excess, int(depth * DROP_FRACTION), 1)
            if excess <= 0 or not depth:
                break
            excess = min(excess, depth)
            self._db.execute("DELETE FROM reading WHERE id IN (SELECT id FROM reading ORDER BY id LIMIT ?)", (excess,))
            dropped += excess
        if dropped:
            self._bump("dropped_total", dropped)
            log.warning(
                "buffer full: dropped the %d oldest readings (bound %d bytes, %s readings)",
                dropped,
                self.max_bytes,
                self.max_readings or "no",
            )

    def _count(self) -> int:
        return self._db.execute("SELECT count(*) FROM reading").fetchone()[0]

    def _bytes_in_use(self) -> int:
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * self._page_size

    def _bump(self, name: str, by: int) -> None:
        self._db.execute(
            "INSERT INTO counter (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + ?",
            (name, by, by),
        )

    def _set(self, name: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO counter (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = ?",
            (name, value, value),
        )

    # --- reading and acknowledging ------------------------------------------------------------------------------

    def oldest(self, limit: int, *, buffered_before_ms: int | None = None) -> list[BufferedReading]:
        """Up to ``limit`` rows, oldest first; only those buffered before ``buffered_before_ms`` when given."""
        if limit <= 0:
            return []
        if buffered_before_ms is None:
            sql, args = "SELECT id, device, ts, buffered_ms, payload FROM reading ORDER BY id LIMIT ?", (limit,)
        else:
            sql = "SELECT id, device, ts, buffered_ms, payload FROM reading WHERE buffered_ms < ? ORDER BY id LIMIT ?"
            args = (buffered_before_ms, limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_row(row) for row in rows]

    def live(self, limit: int, *, buffered_since_ms: int) -> list[BufferedReading]:
        """Up to ``limit`` rows buffered at or after ``buffered_since_ms``, oldest of them first."""
        sql = "SELECT id, device, ts, buffered_ms, payload FROM reading WHERE buffered_ms >= ? ORDER BY id LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (buffered_since_ms, limit)).fetchall()
        return [_row(row) for row in rows]

    def acknowledge(self, ids: Iterable[int]) -> int:
        """Delete rows the platform has (PUBACK, 202); count them as sent. Returns how many were deleted."""
        ids = list(ids)
        if not ids:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                deleted = 0
                for chunk in _chunks(ids, 500):  # SQLite's bound on host parameters
                    marks = ",".join("?" * len(chunk))
                    deleted += self._db.execute(f"DELETE FROM reading WHERE id IN ({marks})", chunk).rowcount
                self._bump("sent_total", deleted)
                self._set("last_send_ms", now_millis())
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return deleted

    def refuse(self, readings: list[BufferedReading], reason: str) -> None:
        """Move readings the platform refused as a whole (resending cannot help) out of the queue, kept for a look."""
        if not readings:
            return
        now = now_millis()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO refused (id, device, ts, payload, reason, refused_ms) VALUES (?,?,?,?,?,?)",
                    [
                        (b.id, b.reading.device, b.reading.ts, json.dumps(b.reading.values), reason, now)
                        for b in readings
                    ],
                )
                marks = ",".join("?" * len(readings))
                self._db.execute(f"DELETE FROM reading WHERE id IN ({marks})", [b.id for b in readings])
                self._db.execute(
                    "DELETE FROM refused WHERE id NOT IN (SELECT id FROM refused ORDER BY id DESC LIMIT ?)",
                    (REFUSED_KEPT,),
                )
                self._bump("refused_total", len(readings))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def count_refused_values(self, count: int) -> None:
        """Values the platform refused inside an accepted batch (202 with errors): counted, not kept."""
        if count:
            with self._lock:
                self._bump("refused_total", count)

    def wait_for_append(self, timeout: float) -> None:
        """Block until a reading is appended (by any thread of this process) or ``timeout`` passes."""
        with self._lock:
            self._appended.wait(timeout)

    # --- reporting ----------------------------------------------------------------------------------------------

    def stats(self) -> BufferStats:
        with self._lock:
            # One statement, one snapshot: the sender (another connection, maybe another process) may delete the
            # oldest row between two statements.
            depth, oldest_buffered, oldest_ts = self._db.execute(
                "SELECT count(*), min(buffered_ms), (SELECT ts FROM reading ORDER BY id LIMIT 1) FROM reading"
            ).fetchone()
            counters = dict(self._db.execute("SELECT name, value FROM counter").fetchall())
            in_use = self._bytes_in_use()
        file_bytes = sum(p.stat().st_size for p in _database_files(self.path) if p.exists())
        return BufferStats(
            depth=depth,
            oldest_buffered_ms=oldest_buffered,
            oldest_ts=oldest_ts,
            bytes_in_use=in_use,
            file_bytes=file_bytes,
            dropped_total=counters.get("dropped_total", 0),
            sent_total=counters.get("sent_total", 0),
            refused_total=counters.get("refused_total", 0),
            last_send_ms=counters.get("last_send_ms"),
        )


def _row(row: tuple) -> BufferedReading:
    id_, device, ts, buffered_ms, payload = row
    return BufferedReading(id_, buffered_ms, Reading(device, ts, json.loads(payload)))


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _database_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
