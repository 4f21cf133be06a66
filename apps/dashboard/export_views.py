"""The Exports page: the user's own export jobs (as the export API scopes them), newest first, with their progress,
download and expiry; ``exports.js`` follows the unfinished ones by the progress pushed over the live websocket
(``fanout.export_fanout``, the owner's group only) and polls the export API while the websocket is down."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.dashboard.selectors import site_scope_for_user
from apps.telemetry.exports import export_is_expired
from apps.telemetry.models import ExportJob

EXPORTS_SHOWN = 100


@login_required
@require_GET
def export_list(request):
    jobs = list(ExportJob.objects.filter(user=request.user).order_by("-created_at")[:EXPORTS_SHOWN])
    for job in jobs:
        job.expired = export_is_expired(job)
        job.series_text = ", ".join(f"{s['device']}:{s['metric']}" for s in job.parameters.get("series", []))
    scope = site_scope_for_user(user=request.user, requested=None)
    return render(
        request, "dashboard/export_list.html", {"scope": scope, "site_param": "all", "jobs": jobs, "live_site_ids": []}
    )
