"""Units compared as units, not as strings: ``"°C"`` on a metric and SenML's ``"Cel"`` on the wire are one unit.

A metric's unit (MetricDefinition.unit) is free text typed by a person; a dialect that carries units (SenML's ``u``)
uses its own registry (RFC 8428 section 12.1 and RFC 8798). Both sides go through ``canonical_unit`` before they
are compared, once per metric when the directory loads and once per value sent with a unit. The table is small on
purpose: it maps the spellings people really type for the SenML units to the SenML name, and nothing else. It never
folds case (``mW`` is not ``MW``) and never guesses: a unit it does not know stays as written, so two spellings it
does not know are equal only when identical.
"""

__all__ = ["canonical_unit"]

_SPELLINGS = {
    "Cel": ("°C", "℃", "degC", "deg C", "celsius", "Celsius"),
    "K": ("kelvin", "Kelvin"),
    # Humidity and battery level are percentages; a metric defined in "%" accepts SenML's specific forms.
    "%": ("%RH", "%EL", "percent", "pct"),
    "l": ("L", "litre", "liter"),
    "l/s": ("L/s",),
    "m3": ("m³",),
    "m2": ("m²",),
    "m3/s": ("m³/s",),
    "ug/m3": ("µg/m3", "μg/m3", "µg/m³", "μg/m³"),
    "Ohm": ("Ω", "ohm"),
    "1/min": ("rpm", "RPM", "/min"),
    "beat/min": ("bpm",),
    "lx": ("lux",),
}
_CANONICAL = {spelling: name for name, spellings in _SPELLINGS.items() for spelling in spellings}


def canonical_unit(unit: str) -> str:
    """The one spelling of ``unit`` that comparisons use; "" for no unit."""
    unit = unit.strip()
    return _CANONICAL.get(unit, unit)
