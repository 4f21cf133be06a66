"""The SQLite buffer: oldest first, deleted only when acknowledged, bounded with counted drops, and durable across
kill -9 of the process that wrote it."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from fieldwatch_agent.buffer import Buffer, Reading


def _readings(count, device="dev-1", start=0):
    return [Reading(device, 1_700_000_000_000 + i, {"v": float(i)}) for i in range(start, start + count)]


def test_oldest_first_and_delete_only_on_acknowledge(tmp_path):
    buffer = Buffer(tmp_path / "b.sqlite3")
    buffer.append(_readings(10))
    first = buffer.oldest(4)
    assert [b.reading.ts for b in first] == [1_700_000_000_000 + i for i in range(4)]
    assert buffer.oldest(4) == first  # reading does not consume
    assert buffer.acknowledge([b.id for b in first]) == 4
    stats = buffer.stats()
    assert (stats.depth, stats.sent_total) == (6, 4)
    assert stats.oldest_ts == 1_700_000_000_004 and stats.last_send_ms is not None
    assert buffer.acknowledge([b.id for b in first]) == 0  # a late second ack changes nothing


def test_live_and_backlog_split_by_buffering_time(tmp_path):
    buffer = Buffer(tmp_path / "b.sqlite3")
    buffer.append(_readings(3))
    cut = buffer.oldest(1)[0].buffered_ms + 1
    assert buffer.oldest(10, buffered_before_ms=cut) == buffer.oldest(10, buffered_before_ms=cut)
    assert len(buffer.oldest(10, buffered_before_ms=cut)) + len(buffer.live(10, buffered_since_ms=cut)) == 3


def test_reopened_buffer_has_everything_and_the_counters(tmp_path):
    path = tmp_path / "b.sqlite3"
    buffer = Buffer(path)
    buffer.append(_readings(5))
    buffer.acknowledge([buffer.oldest(1)[0].id])
    buffer.close()
    again = Buffer(path)
    assert [b.reading.values["v"] for b in again.oldest(10)] == [1.0, 2.0, 3.0, 4.0]
    assert again.stats().sent_total == 1
    # AUTOINCREMENT: a new row never reuses an acknowledged id, so id order stays buffering order.
    again.append(_readings(1, start=99))
    assert again.oldest(10)[-1].id > 5


def test_reading_bound_drops_the_oldest_and_counts_them(tmp_path):
    buffer = Buffer(tmp_path / "b.sqlite3", max_readings=100)
    for start in range(0, 250, 50):
        buffer.append(_readings(50, start=start))
    stats = buffer.stats()
    assert (stats.depth, stats.dropped_total) == (100, 150)
    assert buffer.oldest(1)[0].reading.values["v"] == 150.0  # the newest 100 are kept


def test_byte_bound_holds_the_file_and_keeps_the_newest(tmp_path):
    bound = 256 * 1024
    buffer = Buffer(tmp_path / "b.sqlite3", max_bytes=bound)
    for start in range(0, 20_000, 500):
        buffer.append(_readings(500, start=start))
    stats = buffer.stats()
    assert stats.bytes_in_use <= bound
    assert stats.dropped_total > 0 and stats.depth + stats.dropped_total == 20_000
    assert buffer.oldest(stats.depth)[-1].reading.values["v"] == 19_999.0
    assert os.path.getsize(tmp_path / "b.sqlite3") <= bound + 64 * 1024  # pages freed by drops are reused


def test_refused_readings_leave_the_queue_but_are_kept_for_a_look(tmp_path):
    buffer = Buffer(tmp_path / "b.sqlite3")
    buffer.append(_readings(3))
    buffer.refuse(buffer.oldest(1), "400 invalid_shape")
    assert buffer.stats().depth == 2 and buffer.stats().refused_total == 1
    (row,) = buffer._db.execute("SELECT reason FROM refused").fetchall()
    assert row == ("400 invalid_shape",)


WRITER = textwrap.dedent(
    """
    import sys
    from fieldwatch_agent.buffer import Buffer, Reading
    buffer = Buffer(sys.argv[1], synchronous=sys.argv[2])
    i = 0
    while True:
        buffer.append([Reading("dev-1", 1_700_000_000_000 + i + k, {"v": i + k}) for k in range(10)])
        i += 10
        print(i, flush=True)  # after the commit returned: these are acknowledged to the poller
    """
)


@pytest.mark.parametrize("synchronous", ["full", "normal"])
def test_kill_9_of_the_writer_loses_no_committed_reading(tmp_path, synchronous):
    path = tmp_path / "b.sqlite3"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path), synchronous], stdout=subprocess.PIPE, text=True)
    committed = 0
    for line in child.stdout:
        committed = int(line)
        if committed >= 3000:
            break
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    buffer = Buffer(path)  # replays the WAL the killed process left
    rows = buffer.oldest(1_000_000)
    values = [b.reading.values["v"] for b in rows]
    assert len(values) >= committed
    assert values == list(range(len(values)))  # no hole, no duplicate, in order
