"""What every HTTP ingest endpoint does before its dialect matters: the gateway key, its rate limit, a bounded
body (gzip included), the IngestMessage. The endpoints differ only in how they read the key and how they answer
(Fieldwatch's own JSON at /api/v1/ingest, InfluxDB's at /api/v2/write and /write), so these helpers raise an
``IngestRefusal`` and each endpoint renders it in its own shape."""

import datetime
import zlib
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from apps.core.ratelimit import rate_limit_hit
from apps.devices.models import ApiKey
from apps.devices.services import api_key_authenticate, api_key_failure_reason, api_key_touch
from apps.telemetry.choices import IngestSource, RejectReason
from apps.telemetry.services import IngestMessage


@dataclass
class IngestRefusal(Exception):
    """The request is refused before ingest sees it: ``status`` with a stable ``reason`` code and a ``detail``."""

    status: int
    reason: str
    detail: str
    retry_after: int | None = None


def rejection_status(reason: str) -> int:
    """The HTTP status of a payload refused as a whole: too big, not allowed for the organization, or bad."""
    if reason in (RejectReason.TOO_LARGE, RejectReason.TOO_MANY_RECORDS):
        return 413
    if reason == RejectReason.DIALECT_DISABLED:
        return 403
    return 400


def ingest_key(plaintext: str, *, missing: str = "Send the gateway's API key.") -> ApiKey:
    """The usable gateway key ``plaintext`` is (trimmed: surrounding whitespace is a copy-and-paste accident)."""
    plaintext = plaintext.strip()
    if not plaintext:
        raise IngestRefusal(401, "missing_api_key", missing)
    api_key = api_key_authenticate(plaintext=plaintext)
    if api_key is None:
        raise IngestRefusal(401, *api_key_failure_reason(plaintext=plaintext))
    return api_key


def ingest_rate_check(api_key: ApiKey) -> None:
    decision = rate_limit_hit(
        scope="ingest-key",
        identity=api_key.prefix,  # random per key, unlike a primary key that a new database reuses
        limit=settings.INGEST_HTTP_RATE_PER_MINUTE,
        window_seconds=60,
    )
    if not decision.allowed:
        detail = f"This key may send {settings.INGEST_HTTP_RATE_PER_MINUTE} requests per minute."
        raise IngestRefusal(429, "rate_limited", detail, retry_after=decision.retry_after)


def ingest_body(request, *, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes however it is sent: a Content-Length over it is refused unread,
    the read stops one byte past it (Content-Length may lie or be absent), and a gzip body is inflated only up to
    it (a gzip bomb is refused as soon as its output passes the limit, never inflated whole)."""
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if declared.isdigit() and int(declared) > limit:
        raise IngestRefusal(413, RejectReason.TOO_LARGE, f"The body is {declared} bytes; the limit is {limit}.")
    body = request._request.read(limit + 1)
    if len(body) > limit:
        raise IngestRefusal(413, RejectReason.TOO_LARGE, f"The body exceeds the limit of {limit} bytes.")
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return gunzip_bounded(body, limit=limit)
    raise IngestRefusal(415, "unsupported_encoding", f"Content-Encoding {encoding[:40]!r} is not supported (gzip is).")


def gunzip_bounded(data: bytes, *, limit: int) -> bytes:
    """``data`` gunzipped (every member of it, as gzip allows several), refused past ``limit`` bytes of output."""
    out = bytearray()
    rest = data
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise IngestRefusal(400, RejectReason.UNPARSEABLE, f"The gzip body does not inflate: {exc}.") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise IngestRefusal(413, RejectReason.TOO_LARGE, f"The inflated body exceeds the limit of {limit} bytes.")
        if not inflater.eof:
            raise IngestRefusal(400, RejectReason.UNPARSEABLE, "The gzip body is truncated.")
        rest = inflater.unused_data
        if not rest:
            return bytes(out)


def ingest_message(api_key: ApiKey, body: bytes, request, *, dialect: str = "", **options: Any) -> IngestMessage:
    """The message of an authenticated request, with the key's gateway's dialect settings in its options."""
    api_key_touch(api_key=api_key)
    gateway = api_key.gateway
    return IngestMessage(
        source=IngestSource.HTTP,
        payload=body,
        received_at=datetime.datetime.now(datetime.UTC),
        origin=f"key fwk_{api_key.prefix} from {request.META.get('REMOTE_ADDR', '?')}",
        gateway_uid=gateway.uid,  # whose discovery policy applies to unknown devices
        gateway_site_id=gateway.site_id,
        max_bytes=settings.INGEST_HTTP_MAX_BYTES,
        dialect=dialect,
        options={**gateway.dialect_options(), **options},
    )
