"""Bounds a stored value must keep so that arithmetic on it cannot fail later, far from the request that stored it:
a duration added to a timestamp, a float written into the audit log's JSON. Used by model fields (the admin and
``full_clean``), the serializers that copy model validators, and the services that validate before saving."""

import datetime
import math

from django.core.exceptions import ValidationError
from django.utils.deconstruct import deconstructible

from apps.core.time import duration_text


def validate_finite(value: float) -> None:
    """NaN and ±Infinity are not numbers anyone can compare a reading with, and JSON (the audit log) has neither."""
    if value is not None and not math.isfinite(value):
        raise ValidationError(
            "Give a finite number: %(value)s is not one (NaN and ±Infinity are refused).",
            params={"value": value},
            code="not_finite",
        )


@deconstructible
class DurationRangeValidator:
    """A duration within ``[minimum, maximum]``, with a message naming the bound that was crossed."""

    def __init__(self, minimum: datetime.timedelta, maximum: datetime.timedelta, hint: str = ""):
        self.minimum, self.maximum, self.hint = minimum, maximum, hint

    def __call__(self, value: datetime.timedelta) -> None:
        if value is None:
            return
        if value < self.minimum:
            bound, code = f"at least {duration_text(self.minimum)}", "duration_too_short"
        elif value > self.maximum:
            bound, code = f"at most {duration_text(self.maximum)}", "duration_too_long"
        else:
            return
        raise ValidationError(
            "Give a duration of %(bound)s (from %(minimum)s to %(maximum)s); %(value)s is outside.%(hint)s",
            params={
                "bound": bound,
                "minimum": duration_text(self.minimum),
                "maximum": duration_text(self.maximum),
                "value": duration_text(value),
                "hint": f" {self.hint}" if self.hint else "",
            },
            code=code,
        )

    def __eq__(self, other):
        return isinstance(other, DurationRangeValidator) and (self.minimum, self.maximum, self.hint) == (
            other.minimum,
            other.maximum,
            other.hint,
        )

    def __hash__(self):
        return hash((self.minimum, self.maximum, self.hint))
