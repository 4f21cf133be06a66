"""The parameters every telemetry endpoint shares (series, exports, derived figures): an instant, a timezone, a
series named ``<device uid>:<metric>``. One parser each, so that every endpoint refuses the same inputs the same way."""

import datetime
import math

from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.core.time import (
    INSTANT_MAX_EPOCH_MS,
    INSTANT_MAX_YEAR,
    INSTANT_MIN_YEAR,
    TIMEZONE_MAX_LENGTH,
    epoch_ms,
    from_epoch_ms,
    instant_in_range,
    timezone_named,
)
from apps.devices.validators import EXTERNAL_ID_RE, METRIC_KEY_RE

# The range of a request that gives neither start nor end: the day up to now.
DEFAULT_RANGE = datetime.timedelta(hours=24)
_MAX_INSTANT_TEXT = 64  # longer than any ISO-8601 instant; int() of a 5,000-digit string is not cheap either
_OUT_OF_RANGE = object()


def _instant(value):
    """Epoch milliseconds (a JSON number or a string of digits) or ISO-8601 -> an aware datetime within the years
    Fieldwatch deals in; ``_OUT_OF_RANGE`` for an instant outside them; None for what is not an instant at all."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_INSTANT_TEXT:
            return None
        if text.lstrip("-").isdigit():
            value = int(text)
    if isinstance(value, int | float):
        # Compared before converting: 99999999999999999999 ms is no datetime at all, 0001-01-01 is a datetime that
        # "end - 24 h" cannot go below.
        if not (math.isfinite(value) and 0 <= value <= INSTANT_MAX_EPOCH_MS):
            return _OUT_OF_RANGE
        return from_epoch_ms(value)
    if not isinstance(value, str):
        return None
    try:
        # A '+' in a query string arrives as a space; a space without a 'T' is the date-time separator.
        moment = parse_datetime(text.replace(" ", "+") if "T" in text else text)
    except (ValueError, OverflowError):  # well-formed but impossible (month 13, an offset of 25 h)
        return None
    if moment is None:
        return None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)
    return moment if instant_in_range(moment) else _OUT_OF_RANGE


@extend_schema_field(OpenApiTypes.STR)
class InstantField(serializers.Field):
    """An instant as epoch milliseconds or ISO-8601 (a time without offset is UTC), from 1970 through 2200;
    represented as epoch ms.

    ``allow_blank``: an empty value counts as not given (validated as None), for parameters with a default.
    """

    default_error_messages = {
        "invalid": "{value!r} is not an instant: use epoch milliseconds or ISO-8601 (e.g. 2026-03-29T00:00:00+01:00).",
        "out_of_range": f"{{value!r}} is outside the years {INSTANT_MIN_YEAR} to {INSTANT_MAX_YEAR}: give an instant "
        f"within them (epoch milliseconds from 0 to {INSTANT_MAX_EPOCH_MS}).",
    }

    def __init__(self, *, allow_blank: bool = False, **kwargs):
        self.allow_blank = allow_blank
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if self.allow_blank and data == "":
            return None
        moment = _instant(data)
        if moment is _OUT_OF_RANGE:
            self.fail("out_of_range", value=data)
        if moment is None:
            self.fail("invalid", value=data if not isinstance(data, str) else data[:_MAX_INSTANT_TEXT])
        return moment

    def to_representation(self, value):
        return epoch_ms(value)


@extend_schema_field({"type": "string", "maxLength": TIMEZONE_MAX_LENGTH, "example": "Europe/Berlin"})
class TimezoneField(serializers.CharField):
    """An IANA timezone name (validated by ``apps.core.time.timezone_named``, as a site's timezone is); the name."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", None)  # timezone_named says more than "at most 64 characters"
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        name = super().to_internal_value(data)
        try:
            timezone_named(name)
        except ValueError as error:
            raise serializers.ValidationError(str(error)) from None
        return name


def series_pair(item) -> tuple[str, str] | None:
    """``"<device uid>:<metric>"`` -> (uid, metric), or None unless both are well-formed (uids may contain ':',
    metric keys may not; neither may contain NUL, which PostgreSQL refuses in a query)."""
    if not isinstance(item, str):
        return None
    uid, _, metric = item.rpartition(":")
    if not EXTERNAL_ID_RE.fullmatch(uid) or not METRIC_KEY_RE.fullmatch(metric):
        return None
    return uid, metric
