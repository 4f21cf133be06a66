import ipaddress
import sys

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.http import HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from django.views.defaults import server_error as django_server_error
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def healthz(request):
    """Liveness for load balancers and container HEALTHCHECKs: 200 while the database answers."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any failure means "not healthy", reported to the prober
        return JsonResponse({"status": "unavailable", "database": str(error)}, status=503)
    return JsonResponse({"status": "ok"})


def metrics(request):
    """Prometheus metrics of this web process (HTTP ingest counters). The listener serves its own on a port.

    Only scrapers from METRICS_ALLOWED_NETWORKS may read them: counters by reason and device are operational
    detail a stranger has no business seeing.
    """
    address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", "0.0.0.0"))
    if not any(address in ipaddress.ip_network(network) for network in settings.METRICS_ALLOWED_NETWORKS):
        return HttpResponse("Metrics are only served to the monitoring network.\n", status=403)
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


API_PREFIX = "/api/"


def not_found(request, exception=None):
    """``handler404``: an API client asking for a URL that matches no route (``/api/v1/alerts/1.5``, an export id
    that is no UUID) gets the API's JSON error, as for an object it may not see; pages get Django's HTML page."""
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"detail": "No such endpoint or object."}, status=404)
    return page_not_found(request, exception)


DATABASE_RETRY_AFTER_SECONDS = 5


def server_error(request):
    """``handler500``: a request that failed because the database cannot be reached (stopped, restarting, failed
    over, out of connections) is answered 503 with ``Retry-After``, JSON on API paths: the client's request was
    fine and may be sent again, and a gateway's HTTP client retries a 503 where it gives up on a 500. Every other
    uncaught error stays Django's 500. Django calls this inside its handler for the exception, wherever it was
    raised (a view, DRF, a middleware reading the session), so ``sys.exc_info()`` is that exception."""
    error = sys.exc_info()[1]
    if not isinstance(error, OperationalError | InterfaceError):
        return django_server_error(request)
    detail = f"The database is unavailable; retry in {DATABASE_RETRY_AFTER_SECONDS} seconds."
    if request.path.startswith(API_PREFIX):
        response = JsonResponse({"reason": "database_unavailable", "detail": detail}, status=503)
    else:
        response = HttpResponse(f"{detail}\n", status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response
