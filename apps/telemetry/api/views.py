"""The HTTPS ingest endpoint for gateways: ``POST /api/v1/ingest`` with ``X-API-Key``."""

import threading

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.telemetry.api.ingest_http import (
    IngestRefusal,
    ingest_body,
    ingest_key,
    ingest_message,
    ingest_rate_check,
    rejection_status,
)
from apps.telemetry.ingest.directory import DeviceDirectory
from apps.telemetry.services import telemetry_ingest

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
    parser_classes = []  # the body is read raw: JSON, MessagePack or SenML, detected (apps.telemetry.ingest.dialects)

    @extend_schema(
        operation_id="ingest_readings",
        summary="Send readings (gateway)",
        description=(
            'Body: a gateway payload `{"<device_uid>": [{"ts": <epoch ms | ISO-8601>, "values": {...}}]}`, '
            'or `{"device": "<uid>", "ts": ..., "values": {...}}`, or an array of those. JSON or '
            "MessagePack, detected by content (the Content-Type is not required). Also a SenML (RFC 8428) pack, "
            "JSON or CBOR: by Content-Type `application/senml+json` / `application/senml+cbor` or by content "
            "(docs/dialects.md). `Content-Encoding: gzip` is accepted. Answers after the commit."
        ),
        parameters=[OpenApiParameter("X-API-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=True)],
        # An object, or an array of them: a bad element of an array is refused by itself (listed in `errors`), its
        # neighbours are stored, so any array is a valid body as a whole.
        request={
            "application/json": {"oneOf": [{"type": "object"}, {"type": "array", "items": {}}]},
            "application/msgpack": OpenApiTypes.BINARY,
            "application/senml+json": {"type": "array", "items": {}},  # a bad record is refused alone, as above
            "application/senml+cbor": OpenApiTypes.BINARY,
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
            403: OpenApiResponse(description="The payload's dialect is switched off for the organization (a flag)"),
            413: OpenApiResponse(description="Body over the size bound, or too many records"),
            415: OpenApiResponse(description="A Content-Encoding other than gzip"),
            429: OpenApiResponse(description="Rate limit of the key exceeded; see Retry-After"),
        },
    )
    def post(self, request):
        try:
            missing = "Send the gateway's key in the X-API-Key header."
            api_key = ingest_key(request.headers.get("X-API-Key", ""), missing=missing)
            ingest_rate_check(api_key)
            body = ingest_body(request, limit=settings.INGEST_HTTP_MAX_BYTES)
        except IngestRefusal as refusal:
            extra = {} if refusal.retry_after is None else {"retry_after": refusal.retry_after}
            response = _error(refusal.status, refusal.reason, refusal.detail, **extra)
            if refusal.retry_after is not None:
                response["Retry-After"] = str(refusal.retry_after)
            return response

        # The dialect is the content's (native, or SenML by its Content-Type or its shape).
        message = ingest_message(api_key, body, request, content_type=request.content_type or "")
        result = telemetry_ingest(messages=[message], directory=ingest_directory())
        outcome = result.outcomes[0]
        if outcome.rejection is not None:
            return _error(
                rejection_status(outcome.rejection.reason), outcome.rejection.reason, outcome.rejection.detail
            )
        return Response(
            {
                "accepted": result.inserted,
                "rejected": outcome.rejected,
                "duplicates": result.duplicates,
                "errors": [error.as_dict() for error in outcome.errors[: settings.INGEST_HTTP_MAX_ERRORS]],
            },
            status=status.HTTP_202_ACCEPTED,
        )
