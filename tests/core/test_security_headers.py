"""Security headers on every response: CSP, Permissions-Policy, Referrer-Policy, X-Frame-Options, nosniff."""

import pytest
from django.test import Client

STRICT_DIRECTIVES = [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self' ws: wss:",
    "frame-ancestors 'none'",
    "form-action 'self'",
    "base-uri 'self'",
]


@pytest.mark.parametrize("path", ["/healthz", "/admin/login/", "/api/v1/alerts", "/api/schema"])
def test_every_response_carries_the_strict_policy_and_the_other_headers(db, path):
    response = Client().get(path)
    csp = response["Content-Security-Policy"]
    for directive in STRICT_DIRECTIVES:
        assert directive in csp.split("; "), directive
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "camera=()" in response["Permissions-Policy"] and "geolocation=()" in response["Permissions-Policy"]
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"


def test_swagger_page_runs_only_scripts_served_by_us(db, alice):
    client = Client()
    client.force_login(alice)
    response = client.get("/api/docs")
    csp = response["Content-Security-Policy"]
    assert "script-src 'self';" in csp
    assert "cdn" not in csp and "cdn" not in response.content.decode()
    assert "frame-ancestors 'none'" in csp


def test_a_response_with_its_own_policy_keeps_it(rf, settings):
    from django.http import HttpResponse

    from apps.core.security import SecurityHeadersMiddleware

    def view(request):
        response = HttpResponse()
        response["Content-Security-Policy"] = "default-src 'none'"
        return response

    assert SecurityHeadersMiddleware(view)(rf.get("/x"))["Content-Security-Policy"] == "default-src 'none'"
