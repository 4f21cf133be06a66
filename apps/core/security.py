"""Security headers the browser enforces, and the client address as far as it can be trusted.

``SecurityMiddleware`` already sends HSTS, ``X-Content-Type-Options``, ``Referrer-Policy`` (SECURE_REFERRER_POLICY)
and ``Cross-Origin-Opener-Policy``; ``XFrameOptionsMiddleware`` sends ``X-Frame-Options``. What Django 5.2 lacks is
added here: ``Content-Security-Policy`` and ``Permissions-Policy``.
"""

import ipaddress

from django.conf import settings


# ---------------------------------------------------------------------------------------------------------------------
# Client address
# ---------------------------------------------------------------------------------------------------------------------
def _in_networks(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)


def client_ip(request) -> str | None:
    """The client's IP: ``REMOTE_ADDR``, unless that is one of ``TRUSTED_PROXY_NETWORKS``.

    Behind a trusted proxy, ``X-Forwarded-For`` is read from the right (each proxy appends the address it saw) and
    the first address that is not itself a trusted proxy is the client; everything left of it is client-supplied
    and could be forged. Without trusted proxies the header is ignored, so nobody can pick the IP that the audit
    log records or the login throttle counts.
    """
    remote = request.META.get("REMOTE_ADDR") or None
    trusted = getattr(settings, "TRUSTED_PROXY_NETWORKS", [])
    if remote is None or not trusted or not _in_networks(remote, trusted):
        return _valid(remote)
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    for address in reversed(forwarded):
        if not _in_networks(address, trusted):
            return _valid(address)
    return _valid(remote)


def _valid(address: str | None) -> str | None:
    if address is None:
        return None
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------------------------
# Headers
# ---------------------------------------------------------------------------------------------------------------------
def _policy(directives: dict[str, str]) -> str:
    return "; ".join(f"{name} {value}".strip() for name, value in directives.items())


class SecurityHeadersMiddleware:
    """Add ``Content-Security-Policy`` (``CONTENT_SECURITY_POLICY``, with per-path overrides from
    ``CONTENT_SECURITY_POLICY_PATHS``) and ``Permissions-Policy`` to every response that does not set its own.

    The policy is computed once at start-up; a response that already carries a header (a view with special needs)
    keeps it.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        base = dict(settings.CONTENT_SECURITY_POLICY)
        self.csp = _policy(base)
        self.csp_by_prefix = [
            (prefix, _policy({**base, **overrides}))
            for prefix, overrides in getattr(settings, "CONTENT_SECURITY_POLICY_PATHS", {}).items()
        ]
        self.permissions_policy = settings.PERMISSIONS_POLICY

    def __call__(self, request):
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = self._csp_for(request.path_info)
        if self.permissions_policy and "Permissions-Policy" not in response:
            response["Permissions-Policy"] = self.permissions_policy
        return response

    def _csp_for(self, path: str) -> str:
        for prefix, policy in self.csp_by_prefix:
            if path.startswith(prefix):
                return policy
        return self.csp
