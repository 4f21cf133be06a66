"""Field validators with messages that tell an admin exactly what to fix."""

import re

from django.core.exceptions import ValidationError
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from apps.core.time import timezone_named

# External ids travel in MQTT topics and URLs: no '/', '+', '#' (MQTT wildcards) or whitespace.
EXTERNAL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
METRIC_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
TAG_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,49}$")


def validate_external_id(value: str) -> None:
    if not EXTERNAL_ID_RE.match(value or ""):
        raise ValidationError(
            "%(value)r is not a valid id: use 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter "
            "or digit (it appears in MQTT topics, so '/', '+', '#' and spaces are not allowed).",
            params={"value": value},
            code="invalid_external_id",
        )


def validate_metric_key(value: str) -> None:
    if not METRIC_KEY_RE.match(value or ""):
        raise ValidationError(
            "%(value)r is not a valid metric key: use lower-case letters, digits and '_', starting with a letter, "
            "at most 63 characters (e.g. 'supply_temp').",
            params={"value": value},
            code="invalid_metric_key",
        )


def validate_timezone(value: str) -> None:
    """IANA names only, by the one timezone parser (apps.core.time): a directory of the zoneinfo tree ('Europe') or
    a name too long for the file system was a 500 in the admin's Site form."""
    try:
        timezone_named(value)
    except ValueError as error:
        raise ValidationError(str(error), code="invalid_timezone") from None


def validate_json_schema(value) -> None:
    if value in (None, {}):
        return
    if not isinstance(value, dict):
        raise ValidationError(
            "The payload schema must be a JSON object (a JSON Schema document).", code="schema_not_an_object"
        )
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as error:
        path = "/".join(str(part) for part in error.path) or "(root)"
        raise ValidationError(
            "Invalid JSON Schema at %(path)s: %(message)s",
            params={"path": path, "message": error.message},
            code="invalid_json_schema",
        ) from None


def validate_tags(value) -> None:
    bad = [tag for tag in value or [] if not TAG_RE.match(tag)]
    if bad:
        raise ValidationError(
            "Invalid tags %(tags)s: use lower-case letters, digits, '_', '.', ':' or '-', at most 50 characters.",
            params={"tags": ", ".join(repr(tag) for tag in bad)},
            code="invalid_tags",
        )
