"""Time in one place: epoch milliseconds (the instant format of the API, files and live messages: the one conversion
in Python and the one in SQL), the range of instants Fieldwatch accepts, timezone names, durations in words.

The two epoch conversions are exact for instants with millisecond precision. Below a millisecond the SQL form rounds
to the nearest millisecond (``::int8`` of a float) and the Python form truncates.
"""

import datetime
import functools
import zoneinfo


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


# ---------------------------------------------------------------------------------------------------------------------
# The instants Fieldwatch deals in: readings are accepted, and queries answered, from 1970 through the year 2200.
# Anything outside is a unit mix-up or garbage, and refusing it where it enters keeps every later step (a default
# range of "end - 24 h", bucket arithmetic, PostgreSQL's timestamps) far from datetime's own limits.
# ---------------------------------------------------------------------------------------------------------------------
INSTANT_MIN_YEAR, INSTANT_MAX_YEAR = 1970, 2200
INSTANT_MIN = datetime.datetime(INSTANT_MIN_YEAR, 1, 1, tzinfo=datetime.UTC)
INSTANT_MAX = datetime.datetime(INSTANT_MAX_YEAR + 1, 1, 1, tzinfo=datetime.UTC)  # the first instant past them
INSTANT_MAX_EPOCH_MS = epoch_ms(INSTANT_MAX)


def instant_in_range(moment: datetime.datetime) -> bool:
    """Whether an aware datetime lies within the years Fieldwatch deals in (the end of 2200 included)."""
    return INSTANT_MIN <= moment <= INSTANT_MAX


# ---------------------------------------------------------------------------------------------------------------------
# Timezones: IANA names only, found in one cached list rather than by opening files named by the caller. ZoneInfo()
# on a user's string reads the file of that name under the zoneinfo directory: 'Europe' is a directory there
# (IsADirectoryError), a 300-character name is too long for the file system (OSError), and 'localtime' is whatever the
# host happens to be configured with. None of them is a timezone.
# ---------------------------------------------------------------------------------------------------------------------
TIMEZONE_MAX_LENGTH = 64  # the longest IANA name has 32 characters; Site.timezone stores up to 64


@functools.cache
def timezone_names() -> frozenset[str]:
    """Every IANA timezone name this host knows (loaded once per process)."""
    return frozenset(zoneinfo.available_timezones()) - {"localtime"}


def timezone_named(name: str) -> zoneinfo.ZoneInfo:
    """The IANA timezone called ``name``; ``ValueError`` saying what is wrong for anything else."""
    if not isinstance(name, str):
        raise ValueError(f"A timezone is an IANA name such as 'Europe/Berlin', not {type(name).__name__}.")
    if len(name) > TIMEZONE_MAX_LENGTH:
        raise ValueError(
            f"{name[:20]!r}... ({len(name)} characters) is not a timezone: IANA names have at most "
            f"{TIMEZONE_MAX_LENGTH} characters (e.g. 'Europe/Berlin')."
        )
    if name not in timezone_names():
        raise ValueError(f"{name!r} is not a known IANA timezone (e.g. 'Europe/Berlin', 'America/New_York', 'UTC').")
    return zoneinfo.ZoneInfo(name)


# ---------------------------------------------------------------------------------------------------------------------
# Durations for people: alert messages and validation errors.
# ---------------------------------------------------------------------------------------------------------------------


def duration_text(duration: datetime.timedelta) -> str:
    """'30 d', '2 h', '5 min', '90 s' (the largest unit that divides it; seconds otherwise)."""
    seconds = int(duration.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0 and abs(seconds) >= size:
            return f"{seconds // size} {unit}"
    if duration % datetime.timedelta(seconds=1):
        return f"{duration.total_seconds():g} s"
    return f"{seconds} s"
