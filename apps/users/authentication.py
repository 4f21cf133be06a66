"""Personal API tokens in DRF: ``Authorization: Bearer fwt_<prefix>_<secret>``, with a per-token rate limit.

Token authentication comes first in ``DEFAULT_AUTHENTICATION_CLASSES``: DRF takes the ``WWW-Authenticate``
challenge from the first class, so an unauthenticated API call answers 401 with ``Bearer`` (the second class,
session authentication, still serves the dashboard). A bad bearer token raises ``InvalidApiToken``, an APIException
carrying its own challenge.

The rate limit is a DRF throttle rather than part of the authentication class: throttles run after authentication
and permissions, which is where DRF turns a refusal into 429 with ``Retry-After`` (``Throttled``), and the
authentication class stays about identity only. It counts in Redis through ``apps.core.ratelimit`` and applies
only to token-authenticated requests; sessions are not limited by it.
"""

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from rest_framework import exceptions, status
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.throttling import BaseThrottle

from apps.core.ratelimit import rate_limit_hit
from apps.users.models import ApiToken
from apps.users.services import api_token_authenticate, api_token_touch

CHALLENGE = 'Bearer realm="api"'


class InvalidApiToken(exceptions.APIException):
    status_code = status.HTTP_401_UNAUTHORIZED
    default_detail = "The API token is not valid."
    default_code = "invalid_api_token"
    auth_header = CHALLENGE  # DRF's exception handler sends it as WWW-Authenticate


class ApiTokenAuthentication(BaseAuthentication):
    """Authenticate as the token's user; ``request.auth`` is the ``ApiToken``. No bearer header: not our business."""

    keyword = b"bearer"

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword:
            return None
        if len(header) != 2:
            raise InvalidApiToken("Send exactly one token: 'Authorization: Bearer fwt_...'.")
        try:
            plaintext = header[1].decode("ascii")
        except UnicodeDecodeError as error:
            raise InvalidApiToken() from error
        token, reason = api_token_authenticate(plaintext=plaintext)
        if token is None:
            raise InvalidApiToken(reason)
        api_token_touch(token=token)
        return token.user, token

    def authenticate_header(self, request):
        return CHALLENGE


class ApiTokenRateThrottle(BaseThrottle):
    """At most ``API_TOKEN_RATE_PER_MINUTE`` requests per token per minute, counted across all web processes."""

    def allow_request(self, request, view):
        self.retry_after = None
        if not isinstance(request.auth, ApiToken):
            return True
        decision = rate_limit_hit(
            scope="api-token",
            identity=request.auth.prefix,
            limit=settings.API_TOKEN_RATE_PER_MINUTE,
            window_seconds=60,
        )
        self.retry_after = decision.retry_after
        return decision.allowed

    def wait(self):
        return self.retry_after


class ApiTokenAuthenticationScheme(OpenApiAuthenticationExtension):
    """Documents the bearer scheme in the OpenAPI schema next to drf-spectacular's built-in session (cookie) one."""

    target_class = "apps.users.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        scheme = build_bearer_security_scheme_object(
            header_name="Authorization", token_prefix="Bearer", bearer_format="fwt_<prefix>_<secret>"
        )
        scheme["description"] = "A personal API token, created at POST /api/v1/tokens and shown once."
        return scheme
