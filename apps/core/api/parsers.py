"""The JSON parser of every DRF view (``DEFAULT_PARSER_CLASSES``): DRF's, with a bound on nesting."""

import codecs

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.utils.json import strict_constant

from apps.core.json_bounded import MAX_DEPTH, JSONTooDeep, json_loads_bounded


class BoundedJSONParser(JSONParser):
    """DRF's JSONParser refusing documents nested deeper than ``MAX_DEPTH`` with a 400 instead of a RecursionError
    (a 500); NaN and Infinity literals stay refused (DRF's STRICT_JSON)."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.getreader(encoding)(stream).read()
        except UnicodeDecodeError as error:
            raise ParseError(f"JSON parse error - the body is not valid {encoding}: {error.reason}") from None
        try:
            return json_loads_bounded(text, parse_constant=strict_constant if self.strict else None)
        except JSONTooDeep:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels.") from None
        except ValueError as error:
            raise ParseError(f"JSON parse error - {error}") from None
