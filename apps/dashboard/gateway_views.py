"""The gateways page: each gateway of the shown sites with its devices and its edge agent's health (online or
offline, buffered readings, oldest unsent, send rate, poll errors, drops), live like the device list.

The agent reports its health as readings of the gateway's own device (``selectors.gateway_health_list``), so the
cells carry that device's ``data-latest``/``data-status``/``data-last-seen`` keys and live.js updates them from the
same ``latest`` and ``status`` messages every device page gets.
"""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.utils import timezone
from django.views.decorators.http import require_GET

from apps.dashboard import selectors
from apps.dashboard.views import _page, _render, _scope, _site_param

GATEWAYS_PER_PAGE = 50


@login_required
@require_GET
def gateway_list(request):
    scope = _scope(request)
    now = timezone.now()
    page = _page(Paginator(selectors.gateway_list_for_scope(scope), GATEWAYS_PER_PAGE), request)
    return _render(
        request,
        "dashboard/gateway_list.html",
        scope,
        {
            "page": page,
            "gateways": selectors.gateway_health_list(list(page.object_list), scope=scope, now=now),
            "health_columns": selectors.AGENT_HEALTH_METRICS,
            "query": f"site={_site_param(scope)}",
            "now": now,
        },
    )
