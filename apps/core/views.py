import ipaddress

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.defaults import page_not_found
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
