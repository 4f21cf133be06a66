"""Export jobs over HTTP: create (202 + Location), status, download, retry. A job is visible to its owner only."""

from django.core.files.storage import default_storage
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.telemetry.api.export_serializers import ExportCreateSerializer, ExportJobSerializer
from apps.telemetry.choices import ExportStatus
from apps.telemetry.exports import (
    CONTENT_TYPES,
    DeviceNotFound,
    UnknownSeries,
    export_create,
    export_file_extension,
    export_is_expired,
    export_retry,
    export_series_resolve,
)
from apps.telemetry.models import ExportJob
from apps.telemetry.tasks import export_enqueue


def _job_for_user(request, export_id) -> ExportJob:
    # Scoped by owner: another user's job, even an admin's colleague's, answers 404 like a job that never existed.
    job = ExportJob.objects.filter(pk=export_id, user=request.user).first()
    if job is None:
        raise NotFound("No such export.")
    return job


def _accepted(job: ExportJob) -> Response:
    url = f"/api/v1/exports/{job.id}"
    response = Response({"id": str(job.id), "status": job.status, "url": url}, status=status.HTTP_202_ACCEPTED)
    response["Location"] = url
    return response


class ExportCreateView(APIView):
    @extend_schema(
        operation_id="export_create",
        summary="Start an export of series over a range",
        request=ExportCreateSerializer,
        responses={
            202: OpenApiResponse(description='{"id", "status", "url"}; Location: /api/v1/exports/<id>'),
            400: OpenApiResponse(description="Invalid parameters, or a metric the device does not have"),
            404: OpenApiResponse(description="A device that does not exist or is outside your sites"),
        },
    )
    def post(self, request):
        serializer = ExportCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            series = export_series_resolve(user=request.user, pairs=data["pairs"])
        except DeviceNotFound as error:
            raise NotFound(f"Device {error.args[0]!r} not found.") from None
        except UnknownSeries as error:
            return Response({"series": [str(error)]}, status=status.HTTP_400_BAD_REQUEST)
        job = export_create(
            user=request.user,
            series=series,
            start=data["start"],
            end=data["end"],
            interval=data["interval"],
            aggregates=data.get("agg"),
            file_format=data["format"],
        )
        export_enqueue(job.id)
        return _accepted(job)


class ExportDetailView(APIView):
    @extend_schema(
        operation_id="export_status", summary="Status and progress of an export", responses=ExportJobSerializer
    )
    def get(self, request, export_id):
        return Response(ExportJobSerializer(_job_for_user(request, export_id)).data)


class ExportDownloadView(APIView):
    @extend_schema(
        operation_id="export_download",
        summary="Download an export's file",
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            409: OpenApiResponse(description="The export is not done (pending, running or failed)"),
            410: OpenApiResponse(description="The export expired and its file was deleted"),
        },
    )
    def get(self, request, export_id):
        job = _job_for_user(request, export_id)
        if export_is_expired(job):
            return Response({"detail": "This export expired; start a new one."}, status=status.HTTP_410_GONE)
        if job.status != ExportStatus.DONE:
            return Response(
                {"detail": f"The export is {job.status}, not done.", "status": job.status, "error": job.error},
                status=status.HTTP_409_CONFLICT,
            )
        if not job.file_name or not default_storage.exists(job.file_name):
            return Response({"detail": "The export's file is gone; start a new one."}, status=status.HTTP_410_GONE)
        return FileResponse(
            default_storage.open(job.file_name, "rb"),
            as_attachment=True,
            filename=f"export-{job.id}.{export_file_extension(job.format)}",
            content_type=CONTENT_TYPES[job.format],
        )


class ExportRetryView(APIView):
    @extend_schema(
        operation_id="export_retry",
        summary="Retry a failed export",
        request=None,
        responses={202: OpenApiResponse(description="Queued again"), 409: OpenApiResponse(description="Not failed")},
    )
    def post(self, request, export_id):
        job = _job_for_user(request, export_id)
        if not export_retry(job=job):
            return Response(
                {"detail": f"Only a failed export can be retried; this one is {job.status}."},
                status=status.HTTP_409_CONFLICT,
            )
        export_enqueue(job.id)
        return _accepted(job)
