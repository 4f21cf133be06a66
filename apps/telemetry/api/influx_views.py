"""InfluxDB's write endpoints, for Telegraf and every InfluxDB client: ``POST /api/v2/write`` (2.x, ``Authorization:
Token <gateway key>``) and ``POST /write`` (1.x: ``u``/``p`` parameters or Basic auth, the password being the key).

The body is line protocol (apps.telemetry.ingest.dialects.line_protocol), gzip or not, and ends in the one ingest
service like every other dialect. The answers are InfluxDB's, so clients need no change: 204 when every line was
stored; ``{"code": ..., "message": ...}`` otherwise. What was valid is stored even then (a partial write): 400
``invalid`` when a line does not parse (naming the first such lines), 422 ``unprocessable entity`` when lines parsed
but were refused (unknown device, string field, out of range, ...: what Telegraf logs and drops rather than retries).
``org``, ``bucket``, ``db`` and ``rp`` are accepted and ignored: the key names the gateway, the tags the devices.
"""

import base64
import binascii

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.telemetry.api import views
from apps.telemetry.api.ingest_http import (
    IngestRefusal,
    ingest_body,
    ingest_key,
    ingest_message,
    ingest_rate_check,
    rejection_status,
)
from apps.telemetry.choices import Dialect, RejectReason
from apps.telemetry.ingest.dialects.line_protocol import PRECISIONS
from apps.telemetry.services import IngestOutcome, telemetry_ingest

# InfluxDB's error codes by HTTP status (its API's "code" strings).
_CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    413: "request too large",
    415: "unsupported media type",
    422: "unprocessable entity",
    429: "too many requests",
}
V2_PRECISIONS = ("ns", "us", "ms", "s")
LISTED_LINES = 5  # the refused lines an error message names, first first


def influx_error(status: int, message: str, retry_after: int | None = None, challenge: str = "") -> Response:
    response = Response({"code": _CODES[status], "message": message}, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    if status == 401:  # HTTP requires the challenge; InfluxDB clients ignore it
        response["WWW-Authenticate"] = challenge
    return response


class _InfluxWriteView(APIView):
    authentication_classes = []  # the gateway's key, checked below, not a user
    permission_classes = []
    parser_classes = []  # the body is read raw: line protocol
    precisions: tuple[str, ...] = V2_PRECISIONS
    challenge = 'Token realm="fieldwatch"'

    def key(self, request) -> str:
        """The gateway key as InfluxDB 2.x clients send it: ``Authorization: Token <key>`` (or ``Bearer``)."""
        scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
        return credentials if scheme.lower() in ("token", "bearer") else ""

    def post(self, request):
        precision = request.query_params.get("precision") or "ns"
        try:
            api_key = ingest_key(self.key(request), missing="Send the gateway's API key as the token.")
            ingest_rate_check(api_key)
            if precision not in self.precisions:
                expected = ", ".join(self.precisions)
                raise IngestRefusal(400, "invalid_precision", f"precision {precision[:20]!r} is not one of {expected}")
            body = ingest_body(request, limit=settings.INGEST_HTTP_MAX_BYTES)
        except IngestRefusal as refusal:
            return influx_error(refusal.status, refusal.detail, refusal.retry_after, self.challenge)

        message = ingest_message(api_key, body, request, dialect=Dialect.LINE_PROTOCOL, precision=precision)
        result = telemetry_ingest(messages=[message], directory=views.ingest_directory())
        return _answer(result.outcomes[0], written=result.inserted + result.duplicates)


def _answer(outcome: IngestOutcome, *, written: int) -> Response:
    if outcome.rejection is not None:
        rejection = outcome.rejection
        return influx_error(rejection_status(rejection.reason), f"{rejection.reason}: {rejection.detail}")
    if not outcome.errors:
        return Response(status=204)
    unparsed = [error for error in outcome.errors if error.reason == RejectReason.INVALID_SYNTAX]
    listed = unparsed or outcome.errors
    lines = "; ".join(
        f"line {error.index + 1}: {error.reason}: {error.metric + ': ' if error.metric else ''}{error.detail}"
        for error in listed[:LISTED_LINES]
    )
    more = f" (and {len(listed) - LISTED_LINES} more)" if len(listed) > LISTED_LINES else ""
    summary = f"partial write: {len(outcome.errors)} refused, {written} points written"
    if unparsed:
        return influx_error(400, f"unable to parse {lines}{more}; {summary}")
    return influx_error(422, f"{lines}{more}; {summary}")


_COMMON_RESPONSES = {
    204: OpenApiResponse(description="Every line was stored (a repeated point is stored once)"),
    400: OpenApiResponse(
        description='`{"code": "invalid", "message": "unable to parse line N: ..."}`: a line does not parse (the '
        "valid ones are stored), or a bad precision"
    ),
    401: OpenApiResponse(description='`{"code": "unauthorized", ...}`: missing, unknown, expired or revoked key'),
    403: OpenApiResponse(description="Line protocol is switched off for the key's organization (a feature flag)"),
    413: OpenApiResponse(description="Body (or gzip-inflated body) over the size bound, or too many lines"),
    415: OpenApiResponse(description="A Content-Encoding other than gzip"),
    422: OpenApiResponse(
        description='`{"code": "unprocessable entity", ...}`: lines parsed but were refused (unknown device, '
        "string field, out of range, ...); the valid ones are stored"
    ),
    429: OpenApiResponse(description="Rate limit of the key exceeded; see Retry-After"),
}
_EXAMPLE_LINE = "heating,device=hp-1 supply_temp=41.5,cop=3.2 1700000000000000000"
_BODY = {"text/plain": {"type": "string", "example": _EXAMPLE_LINE}}
_DESCRIPTION = (
    "InfluxDB line protocol, one point per line; gzip with `Content-Encoding: gzip`. The device is the value of the "
    "gateway's device tag (default `device`, else `host`), the metric the field key (or `<measurement>_<field>`, a "
    "gateway setting). Floats, integers, unsigned and booleans are readings; string fields are refused. See "
    "docs/dialects.md."
)


class InfluxWriteV2View(_InfluxWriteView):
    """InfluxDB 2.x ``/api/v2/write`` (Telegraf ``outputs.influxdb_v2``): the key as the token (the base's rule)."""

    @extend_schema(
        operation_id="influxdb_v2_write",
        summary="Write line protocol (InfluxDB 2.x API, Telegraf)",
        description=_DESCRIPTION,
        auth=[],
        parameters=[
            OpenApiParameter(
                "Authorization", OpenApiTypes.STR, OpenApiParameter.HEADER, required=True, description="Token <key>"
            ),
            OpenApiParameter("org", OpenApiTypes.STR, description="Accepted and ignored"),
            OpenApiParameter("bucket", OpenApiTypes.STR, description="Accepted and ignored"),
            OpenApiParameter("precision", OpenApiTypes.STR, enum=list(V2_PRECISIONS), description="Default ns"),
        ],
        request=_BODY,
        responses=_COMMON_RESPONSES,
    )
    def post(self, request):
        return super().post(request)


class InfluxWriteV1View(_InfluxWriteView):
    """InfluxDB 1.x ``/write``: the key as the ``p`` parameter, the Basic auth password, or a v2 token."""

    precisions = tuple(PRECISIONS)
    challenge = 'Basic realm="fieldwatch"'

    def key(self, request) -> str:
        if request.query_params.get("p"):
            return request.query_params["p"]
        scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return ""
            return decoded.partition(":")[2]
        return super().key(request)  # or a v2 token

    @extend_schema(
        operation_id="influxdb_v1_write",
        summary="Write line protocol (InfluxDB 1.x API)",
        description=_DESCRIPTION + " The key is the password: `p=<key>` or HTTP Basic auth (any user name).",
        auth=[],
        parameters=[
            OpenApiParameter("db", OpenApiTypes.STR, description="Accepted and ignored"),
            OpenApiParameter("u", OpenApiTypes.STR, description="Accepted and ignored"),
            OpenApiParameter("p", OpenApiTypes.STR, description="The gateway's API key (or use Basic auth)"),
            OpenApiParameter("precision", OpenApiTypes.STR, enum=list(PRECISIONS), description="Default ns"),
        ],
        request=_BODY,
        responses=_COMMON_RESPONSES,
    )
    def post(self, request):
        return super().post(request)
