"""Container HEALTHCHECKs, standard library only (the slim image has no curl). Exit 0 healthy, 1 not.

``python docker/healthcheck.py`` (web): GET http://127.0.0.1:8000/healthz must answer 200. It sends a Host header
taken from DJANGO_ALLOWED_HOSTS so Django does not answer 400 DisallowedHost for "127.0.0.1", and
X-Forwarded-Proto: https so an HTTPS redirect does not turn the probe into a 301 (uvicorn --proxy-headers trusts
forwarded headers from 127.0.0.1).

``python docker/healthcheck.py listener``: the MQTT listener's metrics (``mqtt_listen --metrics-port``, default
9108, or ``LISTENER_METRICS_PORT``) must say it is connected to the broker and that its flushing loop made progress
within ``LISTENER_MAX_STALL_SECONDS`` (default 60): a listener stuck retrying a flush, or cut off from the broker,
is unhealthy.
"""

import os
import sys
import urllib.request

WEB_URL = "http://127.0.0.1:8000/healthz"


def probe_host() -> str:
    for entry in os.environ.get("DJANGO_ALLOWED_HOSTS", "").replace(",", " ").split():
        host = entry.lstrip(".")  # ".example.com" also matches "example.com"
        if host and host != "*":
            return host
    return "localhost"


def web() -> str | None:
    request = urllib.request.Request(WEB_URL, headers={"Host": probe_host(), "X-Forwarded-Proto": "https"})
    with urllib.request.urlopen(request, timeout=4) as response:
        return None if response.status == 200 else f"/healthz answered {response.status}"


def gauges(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def listener() -> str | None:
    port = int(os.environ.get("LISTENER_METRICS_PORT", "9108"))
    max_stall = float(os.environ.get("LISTENER_MAX_STALL_SECONDS", "60"))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=4) as response:
        values = gauges(response.read().decode())
    if values.get("fieldwatch_ingest_listener_connected") != 1:
        return "the listener is not connected to the broker"
    stall = values.get("fieldwatch_ingest_listener_loop_age_seconds", float("inf"))
    if stall > max_stall:
        return f"the listener's flushing loop has made no progress for {stall:.0f} s"
    return None


def main(role: str) -> int:
    try:
        problem = listener() if role == "listener" else web()
    except Exception as exc:  # noqa: BLE001 - HTTPError, URLError, timeouts: all unhealthy
        problem = str(exc)
    if problem:
        print(f"healthcheck failed: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "web"))
