"""The instant parameter every telemetry endpoint takes (series, exports, derived figures)."""

import datetime

from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.core.time import epoch_ms, from_epoch_ms

# The range of a request that gives neither start nor end: the day up to now.
DEFAULT_RANGE = datetime.timedelta(hours=24)


def _instant(value) -> datetime.datetime | None:
    """Epoch milliseconds (a JSON number or a string of digits) or ISO-8601 -> an aware datetime; None if neither."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return from_epoch_ms(value)
        if not isinstance(value, str):
            return None
        text = value.strip()
        if text.lstrip("-").isdigit():
            return from_epoch_ms(int(text))
        # A '+' in a query string arrives as a space; a space without a 'T' is the date-time separator.
        moment = parse_datetime(text.replace(" ", "+") if "T" in text else text)
    except (ValueError, OverflowError, OSError):  # out of datetime's range, or not finite
        return None
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


@extend_schema_field(OpenApiTypes.STR)
class InstantField(serializers.Field):
    """An instant as epoch milliseconds or ISO-8601 (a time without offset is UTC); represented as epoch ms.

    ``allow_blank``: an empty value counts as not given (validated as None), for parameters with a default.
    """

    default_error_messages = {
        "invalid": "{value!r} is not an instant: use epoch milliseconds or ISO-8601 (e.g. 2026-03-29T00:00:00+01:00).",
    }

    def __init__(self, *, allow_blank: bool = False, **kwargs):
        self.allow_blank = allow_blank
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if self.allow_blank and data == "":
            return None
        moment = _instant(data)
        if moment is None:
            self.fail("invalid", value=data)
        return moment

    def to_representation(self, value):
        return epoch_ms(value)
