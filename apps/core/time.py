"""Epoch milliseconds, the instant format of the API, files and live messages: the one conversion in Python and
the one in SQL.

Both are exact for instants with millisecond precision. Below a millisecond the SQL form rounds to the nearest
millisecond (``::int8`` of a float) and the Python form truncates.
"""

import datetime


def epoch_ms(moment: datetime.datetime) -> int:
    """An aware datetime as integer epoch milliseconds."""
    return int(moment.timestamp() * 1000)


def from_epoch_ms(value: int | float, tz: datetime.tzinfo = datetime.UTC) -> datetime.datetime:
    """Epoch milliseconds as an aware datetime in ``tz``."""
    return datetime.datetime.fromtimestamp(value / 1000, tz=tz)


def epoch_ms_sql(column: str) -> str:
    """SQL for the timestamptz ``column`` as int8 epoch milliseconds, computed in the database: cheaper than building
    a datetime per row in Python."""
    return f"(date_part('epoch', {column}) * 1000)::int8"
