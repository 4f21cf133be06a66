"""Formatting for the dashboard templates: reading values and device status labels."""

import math

from django import template

from apps.devices.choices import DeviceStatus

register = template.Library()


@register.filter
def reading(value) -> str:
    """A reading for display: at most two decimals, no trailing zeros, thousands grouped; "—" when there is none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@register.filter
def status_label(code) -> str:
    """The text of a device status (Online / Offline / Never seen / Inactive): status is never colour alone."""
    try:
        return DeviceStatus(code).label
    except ValueError:
        return str(code)
