from django.db import connection
from django.http import JsonResponse


def healthz(request):
    """Liveness for load balancers and container HEALTHCHECKs: 200 while the database answers."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any failure means "not healthy", reported to the prober
        return JsonResponse({"status": "unavailable", "database": str(error)}, status=503)
    return JsonResponse({"status": "ok"})
