"""The HTTPS ingest endpoint for gateways: ``POST /api/v1/ingest`` with ``X-API-Key``."""

import datetime
import threading

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.ratelimit import rate_limit_hit
from apps.devices.services import api_key_authenticate, api_key_failure_reason, api_key_touch
from apps.telemetry.choices import IngestSource, RejectReason
from apps.telemetry.ingest.directory import DeviceDirectory
from apps.telemetry.services import IngestMessage, telemetry_ingest

_directory: DeviceDirectory | None = None
_directory_lock = threading.Lock()


def ingest_directory() -> DeviceDirectory:
    """One device directory per web process, loaded on first use and refreshed on catalogue changes."""
    global _directory
    with _directory_lock:
        if _directory is None:
            _directory = DeviceDirectory()
        return _directory


# The challenge of a 401 here: the gateway's key goes in a header of its own, not in Authorization.
CHALLENGE = 'ApiKey realm="ingest", header="X-API-Key"'


def _error(code: int, reason: str, detail: str, **extra) -> Response:
    response = Response({"reason": reason, "detail": detail, **extra}, status=code)
    if code == status.HTTP_401_UNAUTHORIZED:
        response["WWW-Authenticate"] = CHALLENGE
    return response


class IngestView(APIView):
    """Accept readings from a gateway. Partial acceptance: valid records are stored even when others are not."""

    authentication_classes = []  # gateways authenticate with X-API-Key, checked below, not as users
    permission_classes = []
    parser_classes = []  # the body is read raw: JSON or MessagePack, detected by content, any Content-Type

    @extend_schema(
        operation_id="ingest_readings",
        summary="Send readings (gateway)",
        description=(
            'Body: a gateway payload `{"<device_uid>": [{"ts": <epoch ms | ISO-8601>, "values": {...}}]}`, '
            'or `{"device": "<uid>", "ts": ..., "values": {...}}`, or an array of those. JSON or '
            "MessagePack, detected by content (the Content-Type is not required). Answers after the commit."
        ),
        parameters=[OpenApiParameter("X-API-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=True)],
        # An object, or an array of them: a bad element of an array is refused by itself (listed in `errors`), its
        # neighbours are stored, so any array is a valid body as a whole.
        request={
            "application/json": {"oneOf": [{"type": "object"}, {"type": "array", "items": {}}]},
            "application/msgpack": OpenApiTypes.BINARY,
        },
        responses={
            202: OpenApiResponse(
                description="Stored what was valid",
                examples=[
                    OpenApiExample(
                        "partial",
                        value={
                            "accepted": 2,
                            "rejected": 1,
                            "duplicates": 0,
                            "errors": [{"index": 1, "device": "hp-a-001", "reason": "out_of_range", "detail": "..."}],
                        },
                    )
                ],
            ),
            400: OpenApiResponse(description="The body does not parse or has no supported shape"),
            401: OpenApiResponse(description="Missing, unknown, expired or revoked API key"),
            413: OpenApiResponse(description="Body over the size bound, or too many records"),
            429: OpenApiResponse(description="Rate limit of the key exceeded; see Retry-After"),
        },
    )
    def post(self, request):
        # Whitespace around the key is a copy-and-paste accident, trimmed at both ends (servers strip the leading
        # part already; a trailing space or tab would otherwise make a valid key "not valid").
        plaintext = request.headers.get("X-API-Key", "").strip()
        if not plaintext:
            return _error(401, "missing_api_key", "Send the gateway's key in the X-API-Key header.")
        api_key = api_key_authenticate(plaintext=plaintext)
        if api_key is None:
            reason, detail = api_key_failure_reason(plaintext=plaintext)
            return _error(401, reason, detail)

        decision = rate_limit_hit(
            scope="ingest-key",
            identity=api_key.prefix,  # random per key, unlike a primary key that a new database reuses
            limit=settings.INGEST_HTTP_RATE_PER_MINUTE,
            window_seconds=60,
        )
        if not decision.allowed:
            response = _error(
                429,
                "rate_limited",
                f"This key may send {settings.INGEST_HTTP_RATE_PER_MINUTE} requests per minute.",
                retry_after=decision.retry_after,
            )
            response["Retry-After"] = str(decision.retry_after)
            return response

        limit = settings.INGEST_HTTP_MAX_BYTES
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if declared.isdigit() and int(declared) > limit:
            return _error(413, RejectReason.TOO_LARGE, f"The body is {declared} bytes; the limit is {limit}.")
        body = request._request.read(limit + 1)  # bounded read even when Content-Length lies or is absent
        if len(body) > limit:
            return _error(413, RejectReason.TOO_LARGE, f"The body exceeds the limit of {limit} bytes.")

        api_key_touch(api_key=api_key)
        message = IngestMessage(
            source=IngestSource.HTTP,
            payload=body,
            received_at=datetime.datetime.now(datetime.UTC),
            origin=f"key fwk_{api_key.prefix} from {request.META.get('REMOTE_ADDR', '?')}",
            gateway_site_id=api_key.gateway.site_id,
            max_bytes=limit,
        )
        result = telemetry_ingest(messages=[message], directory=ingest_directory())
        outcome = result.outcomes[0]
        if outcome.rejection is not None:
            code = 413 if outcome.rejection.reason in {RejectReason.TOO_LARGE, RejectReason.TOO_MANY_RECORDS} else 400
            return _error(code, outcome.rejection.reason, outcome.rejection.detail)
        return Response(
            {
                "accepted": result.inserted,
                "rejected": outcome.rejected,
                "duplicates": result.duplicates,
                "errors": [error.as_dict() for error in outcome.errors[: settings.INGEST_HTTP_MAX_ERRORS]],
            },
            status=status.HTTP_202_ACCEPTED,
        )
