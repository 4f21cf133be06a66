"""The DRF permissions of the users app: token scopes (on every view) and organization admins.

``TokenScopePermission`` is in ``REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"]`` after ``IsAuthenticated``, so
every API view checks it before doing anything, whatever its own object checks; a view that sets its own
``permission_classes`` must keep it (tests/users/test_token_scopes.py walks every route to hold that). It only
looks at requests authenticated by a personal token: a session is the person at the keyboard, not limited by
scopes. Safe methods need ``read``, every other method ``write``.
"""

from rest_framework.permissions import SAFE_METHODS, BasePermission

from apps.users.choices import TokenScope
from apps.users.models import ApiToken


def required_scope(method: str) -> str:
    return TokenScope.READ if method in SAFE_METHODS else TokenScope.WRITE


class TokenScopePermission(BasePermission):
    """403 when the request's token lacks the scope its method needs."""

    def has_permission(self, request, view) -> bool:
        token = request.auth
        if not isinstance(token, ApiToken):
            return True
        needed = required_scope(request.method)
        if needed in token.scopes:
            return True
        # DRF reads ``message`` off the refusing instance; one instance serves one request.
        self.message = (
            f"This API token lacks the '{needed}' scope that {request.method} requests need "
            f"(it has: {', '.join(token.scopes)})."
        )
        return False


class IsOrganizationAdmin(BasePermission):
    """The user administers an organization (the admin role within one); superusers without one do not."""

    message = "Only organization admins may do this."

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_org_admin)
