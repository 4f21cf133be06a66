"""ThingsBoard's device HTTP API, for firmware written for ThingsBoard: ``POST /api/v1/<access token>/telemetry``
and ``POST /api/v1/<access token>/attributes``, with ThingsBoard's body shapes, answered as ThingsBoard answers
(200, empty body, on success), so its HTTP clients work unchanged.

The token (``fwa_...``, apps.devices.models.AccessToken) is the whole credential, as in ThingsBoard: it names the
device, so the body's readings are that device's (the device payload shapes of apps.telemetry.ingest.parsing:
``{"ts": ..., "values": {...}}``, ``{"<metric>": <value>}`` or an array of either). The same ingest service as every
other path validates and stores them; refusals are dead-lettered and counted as everywhere.
"""

import datetime

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core import flags
from apps.core.ratelimit import rate_limit_hit
from apps.devices.services import access_token_authenticate
from apps.telemetry.api.ingest_http import rejection_status
from apps.telemetry.api.views import ingest_directory
from apps.telemetry.choices import IngestSource, RejectReason
from apps.telemetry.services import IngestMessage, telemetry_ingest

TOKEN_PARAMETER = OpenApiParameter(
    "token", OpenApiTypes.STR, OpenApiParameter.PATH, description="The device's access token (fwa_...)."
)


# The challenge of a 401 here: the credential is the access token in the path, as ThingsBoard has it.
CHALLENGE = 'AccessToken realm="ingest", location="path"'


def _error(code: int, reason: str, detail: str) -> Response:
    response = Response({"reason": reason, "detail": detail}, status=code)
    if code == 401:
        response["WWW-Authenticate"] = CHALLENGE
    return response


class ThingsBoardDeviceView(APIView):
    """One ThingsBoard device endpoint; ``attributes`` says which (readings or client attributes)."""

    authentication_classes = []  # the token in the path is the credential, checked below
    permission_classes = []
    parser_classes = []  # the body is read raw, bounded, and parsed by ingest
    attributes = False

    def post(self, request, token: str):
        access = access_token_authenticate(plaintext=token)
        if access is None or access.device is None:
            # ThingsBoard answers 401 for a token it does not know; gateway tokens speak the MQTT gateway API only.
            return _error(401, "invalid_access_token", "The access token is not valid for a device.")
        if not flags.flag_active(flags.DIALECT_THINGSBOARD, access.device.site.organization_id, default=True):
            detail = f"The ThingsBoard API is not switched on for this organization (flag {flags.DIALECT_THINGSBOARD})."
            return _error(403, RejectReason.DIALECT_DISABLED, detail)
        decision = rate_limit_hit(
            scope="ingest-token",
            identity=access.prefix,
            limit=settings.INGEST_HTTP_RATE_PER_MINUTE,
            window_seconds=60,
        )
        if not decision.allowed:
            response = _error(429, "rate_limited", f"{settings.INGEST_HTTP_RATE_PER_MINUTE} requests per minute.")
            response["Retry-After"] = str(decision.retry_after)
            return response
        limit = settings.INGEST_HTTP_MAX_BYTES
        body = request._request.read(limit + 1)  # bounded whatever Content-Length says
        if len(body) > limit:
            return _error(413, RejectReason.TOO_LARGE, f"The body exceeds the limit of {limit} bytes.")
        access.touch()
        message = IngestMessage(
            source=IngestSource.HTTP,
            payload=body,
            received_at=datetime.datetime.now(datetime.UTC),
            origin=f"token fwa_{access.prefix} from {request.META.get('REMOTE_ADDR', '?')}",
            device_uid=access.device.uid,
            max_bytes=limit,
            attributes=self.attributes,
        )
        outcome = telemetry_ingest(messages=[message], directory=ingest_directory()).outcomes[0]
        if outcome.rejection is not None:
            return _error(
                rejection_status(outcome.rejection.reason), outcome.rejection.reason, outcome.rejection.detail
            )
        if not outcome.rejected:
            return Response(status=200)  # ThingsBoard's answer: 200, nothing in the body
        errors = [error.as_dict() for error in outcome.errors[: settings.INGEST_HTTP_MAX_ERRORS]]
        return Response({"accepted": outcome.accepted, "rejected": outcome.rejected, "errors": errors}, status=200)


_RESPONSES = {
    200: OpenApiResponse(description="Stored (empty body); with some values refused, a body listing them"),
    400: OpenApiResponse(description="The body does not parse or has no supported shape"),
    401: OpenApiResponse(description="Unknown, revoked or non-device access token"),
    403: OpenApiResponse(description="The ThingsBoard API is switched off for the device's organization (a flag)"),
    413: OpenApiResponse(description="Body over the size bound"),
    429: OpenApiResponse(description="Rate limit of the token exceeded; see Retry-After"),
}


class ThingsBoardTelemetryView(ThingsBoardDeviceView):
    @extend_schema(
        operation_id="thingsboard_telemetry",
        summary="Send readings as ThingsBoard firmware does",
        description='Body: `{"ts": <epoch ms>, "values": {...}}`, `{"<metric>": <value>, ...}` or an array of them.',
        parameters=[TOKEN_PARAMETER],
        request={"application/json": {"oneOf": [{"type": "object"}, {"type": "array", "items": {}}]}},
        responses=_RESPONSES,
    )
    def post(self, request, token: str):
        return super().post(request, token)


class ThingsBoardAttributesView(ThingsBoardDeviceView):
    attributes = True

    @extend_schema(
        operation_id="thingsboard_attributes",
        summary="Report client attributes as ThingsBoard firmware does",
        description='Body: `{"<attribute>": <any JSON value>, ...}`, kept in the device\'s client attributes.',
        parameters=[TOKEN_PARAMETER],
        request={"application/json": {"type": "object"}},
        responses=_RESPONSES,
    )
    def post(self, request, token: str):
        return super().post(request, token)
