"""Serializer fields every app's API uses for numbers a stranger sends."""

import math

from rest_framework import serializers


class FiniteFloatField(serializers.FloatField):
    """A float that is a number: DRF's FloatField takes ``true`` (as 1.0), ``"NaN"``, ``"Infinity"`` and ``1e309``
    (read as infinity by the JSON parser); none of them is a threshold, and JSON cannot even store the last three."""

    default_error_messages = {
        "not_a_number": "{input} is not a number.",
        "not_finite": "Give a finite number: {input} is not one (NaN and ±Infinity are refused).",
    }

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("not_a_number", input=str(data).lower())
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            self.fail("not_finite", input=data)
        return value
