"""Container HEALTHCHECK for the web role: GET http://127.0.0.1:8000/healthz.

Exits 0 on HTTP 200, 1 otherwise. Standard library only (the slim image has no
curl). Sends a Host header taken from DJANGO_ALLOWED_HOSTS so Django does not
answer 400 DisallowedHost for "127.0.0.1", and X-Forwarded-Proto: https so an
HTTPS redirect does not turn the probe into a 301 (uvicorn --proxy-headers
trusts forwarded headers from 127.0.0.1).
"""

import os
import sys
import urllib.request

URL = "http://127.0.0.1:8000/healthz"


def probe_host() -> str:
    for entry in os.environ.get("DJANGO_ALLOWED_HOSTS", "").replace(",", " ").split():
        host = entry.lstrip(".")  # ".example.com" also matches "example.com"
        if host and host != "*":
            return host
    return "localhost"


def main() -> int:
    request = urllib.request.Request(URL, headers={"Host": probe_host(), "X-Forwarded-Proto": "https"})
    try:
        with urllib.request.urlopen(request, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except Exception as exc:  # noqa: BLE001 - HTTPError, URLError, timeouts: all unhealthy
        print(f"healthcheck failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
