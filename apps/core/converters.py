"""Path converters shared by every URL conf. Importing this module registers them.

``<segment:name>`` is ``<str:name>`` without NUL: ``str`` matches anything but '/', so ``/devices/%00/latest``
reached the view and PostgreSQL refused the NUL in the query (a 500). A segment with NUL now matches no route: 404.
"""

from django.urls import register_converter
from django.urls.converters import StringConverter

SEGMENT = "segment"


class SegmentConverter(StringConverter):
    regex = "[^/\x00]+"


register_converter(SegmentConverter, SEGMENT)
