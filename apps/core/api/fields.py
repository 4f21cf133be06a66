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


class ScopedRelatedFieldMixin:
    """A related object among those the requesting user may see (``scope(user)``, a selector): another tenant's
    id reads as one that does not exist, so a body can neither reach nor probe for it."""

    def __init__(self, scope, **kwargs):
        self.scope = scope
        super().__init__(**kwargs)

    def get_queryset(self):
        return self.scope(self.context["request"].user)


class ScopedPrimaryKeyRelatedField(ScopedRelatedFieldMixin, serializers.PrimaryKeyRelatedField):
    """By id, e.g. ``"site": 3``."""


class ScopedSlugRelatedField(ScopedRelatedFieldMixin, serializers.SlugRelatedField):
    """By a unique natural key, e.g. ``"gateway": "gw-a"``."""
