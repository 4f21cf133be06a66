"""Holding the readings writer up from outside: another session takes ``telemetry_reading`` in EXCLUSIVE mode, so
every flush (its INSERT) waits, as behind a stalled disk, while reads go on. Used by the backpressure test and the
listener-kill drill."""

from contextlib import contextmanager

import psycopg


class WriterHold:
    """The held lock; ``release()`` ends it early (a test that kills the listener while it is held)."""

    def __init__(self, database_url: str):
        self.connection = psycopg.connect(database_url)
        self.connection.execute("LOCK TABLE telemetry_reading IN EXCLUSIVE MODE")

    def release(self) -> None:
        if not self.connection.closed:
            self.connection.rollback()
            self.connection.close()


@contextmanager
def writer_held(database_url: str):
    hold = WriterHold(database_url)
    try:
        yield hold
    finally:
        hold.release()
