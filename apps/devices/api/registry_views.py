"""The registry over REST: sites, device types (with their metrics), gateways and devices; bulk import and CSV export
of devices.

Every read starts from a selector of ``apps.devices.selectors``, so an object outside the user's sites (or another
organization's type) is a 404 for every method, before any permission is looked at; writes go through the services,
which check who may write (403 for a user who can see the object but not change it) and validate as the admin does.
Lists are cursor-paginated over a unique ordering and filtered by the resource's FilterSet (``apps.devices.filters``).
"""

from functools import cached_property

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import StreamingHttpResponse
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from django_filters.utils import translate_validation
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ParseError, PermissionDenied, ValidationError
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings

from apps.core.api.pagination import BoundedCursorPagination
from apps.core.api.parsers import BoundedJSONParser
from apps.core.api.renderers import JSONErrorsMixin
from apps.devices import imports, services
from apps.devices.api import registry_examples as examples
from apps.devices.api.registry_serializers import (
    DeviceRemovedSerializer,
    DeviceRemoveQuerySerializer,
    DeviceSerializer,
    DeviceTypeSerializer,
    GatewaySerializer,
    ImportQuerySerializer,
    ImportResultSerializer,
    ImportRowSerializer,
    SiteSerializer,
    service_errors,
)
from apps.devices.filters import DeviceFilterSet, DeviceTypeFilterSet, GatewayFilterSet, SiteFilterSet
from apps.devices.selectors import (
    device_list_for_user,
    device_type_with_metrics_list_for_user,
    devices_with_status,
    gateway_list_for_user,
    site_list_for_user,
    user_configures_organization,
)

NOT_FOUND = OpenApiResponse(description="Not among the objects you may see")
FORBIDDEN = OpenApiResponse(description="You can see it but your role may not change it")
CONFLICT = OpenApiResponse(description="Still in use (devices, gateways, alert rules): the body says what")
# A uid may contain '.', which DRF's default lookup pattern refuses; NUL is refused as <segment:...> refuses it.
LOOKUP_SEGMENT = "[^/\x00]+"


class RegistryCursorPagination(BoundedCursorPagination):
    page_size = 100
    ordering = "id"


class DeviceCursorPagination(RegistryCursorPagination):
    ordering = "uid"


class _RegistryViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """List, read, create, PATCH and delete; no PUT (a partial change is all a registry client needs)."""

    filter_backends = [DjangoFilterBackend]
    pagination_class = RegistryCursorPagination
    lookup_value_regex = "[0-9]+"
    scope = None  # the selector: (user) -> queryset

    def get_queryset(self):
        return type(self).scope(self.request.user)

    def create(self, request, *args, **kwargs):
        # Who may create is known before the body is read: a viewer's well-formed body is a 403, not a 400.
        if not user_configures_organization(user=request.user):
            raise PermissionDenied("Only organization admins may change the registry.")
        return super().create(request, *args, **kwargs)

    def partial_update(self, request, *args, **kwargs):
        serializer = self.get_serializer(self.get_object(), data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        serializer.save()
        return Response(serializer.data)

    def handle_exception(self, exc):
        if isinstance(exc, DjangoPermissionDenied):
            exc = PermissionDenied(str(exc))
        elif isinstance(exc, DjangoValidationError):
            exc = service_errors(exc)
        elif isinstance(exc, services.RegistryConflict):
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return super().handle_exception(exc)


def _crud_schema(name: str, plural: str, example, create_example, patch_example, delete: str):
    ok = [OpenApiExample(name, value=example, response_only=True)]
    return extend_schema_view(
        list=extend_schema(summary=f"List {plural}", examples=ok),
        retrieve=extend_schema(summary=f"A {name}", examples=ok),
        create=extend_schema(
            summary=f"Create a {name}",
            description="Organization admins. Invalid values answer 400 with a message per field.",
            examples=[OpenApiExample(f"new {name}", value=create_example, request_only=True), *ok],
        ),
        partial_update=extend_schema(
            summary=f"Change a {name}",
            description="Organization admins (for devices, operators of the site too: name, metadata, tags).",
            examples=[OpenApiExample(f"change a {name}", value=patch_example, request_only=True), *ok],
        ),
        destroy=extend_schema(
            summary=f"Delete a {name}",
            description=delete,
            responses={204: None, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT},
        ),
    )


@_crud_schema(
    "site",
    "sites",
    examples.SITE,
    examples.SITE_CREATE,
    {"address": "Werkstraße 2, Kassel"},
    "Only a site without devices, gateways or archived readings; its grants go with it.",
)
class SiteViewSet(_RegistryViewSet):
    """Sites you may see; organization admins write."""

    serializer_class = SiteSerializer
    filterset_class = SiteFilterSet
    scope = staticmethod(lambda user: site_list_for_user(user=user))

    def perform_destroy(self, instance):
        services.site_delete(user=self.request.user, site=instance)


@_crud_schema(
    "device type",
    "device types",
    examples.DEVICE_TYPE,
    examples.DEVICE_TYPE_CREATE,
    {"offline_after": "00:10:00"},
    "Only a type no device or alert rule uses.",
)
class DeviceTypeViewSet(_RegistryViewSet):
    """Your organization's device types with their metric definitions; every member reads, admins write."""

    serializer_class = DeviceTypeSerializer
    filterset_class = DeviceTypeFilterSet
    scope = staticmethod(lambda user: device_type_with_metrics_list_for_user(user=user))

    def perform_destroy(self, instance):
        services.device_type_delete(user=self.request.user, device_type=instance)


@_crud_schema(
    "gateway",
    "gateways",
    examples.GATEWAY,
    {"uid": "gw-a-02", "name": "Plant room B", "site": 1},
    {"name": "Plant room B (north)"},
    "Only a gateway no device forwards through; its API keys and broker logins go with it.",
)
class GatewayViewSet(_RegistryViewSet):
    """Gateways of the sites you may see; organization admins write."""

    serializer_class = GatewaySerializer
    filterset_class = GatewayFilterSet
    lookup_field = "uid"
    lookup_value_regex = LOOKUP_SEGMENT
    scope = staticmethod(lambda user: gateway_list_for_user(user=user))

    def perform_destroy(self, instance):
        services.gateway_delete(user=self.request.user, gateway=instance)


# ---------------------------------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------------------------------
class DeviceCSVRenderer(BaseRenderer):
    """``?format=csv``: the import's columns (``apps.devices.imports``), streamed by the view itself."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, (bytes, str)) else b""


class CSVTextParser(BaseParser):
    """A CSV import body, read as UTF-8 text (a BOM is dropped)."""

    media_type = "text/csv"

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return stream.read().decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise ParseError(f"The CSV is not UTF-8 text: {error.reason}.") from None


DEVICE_LIST_DESCRIPTION = """
Devices on the sites you may see, ordered by device id, cursor-paginated (`limit`, then follow `next`), each with
its **status** (`online` / `offline` from `last_seen` and its type's `offline_after`, `never_seen`, `inactive`) and
its **latest values** (`latest`: metric -> value and time). The filters are the dashboard device list's: the same
query string selects the same devices.

`format=csv` answers every matching device (no pagination) as CSV in the columns of `POST /devices/import`, so an
exported fleet imports again unchanged.
"""


def device_list_schema(serializer):
    """The list's document for ``serializer`` (the devices app's, or telemetry's with the latest values)."""
    return extend_schema(
        summary="List devices with status and latest values",
        description=DEVICE_LIST_DESCRIPTION,
        parameters=[OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"], description="csv: export")],
        responses={
            (200, "application/json"): serializer,
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR, description="uid,name,site,type,gateway,tags,metadata"
            ),
        },
        examples=[OpenApiExample("a page", value=examples.DEVICE_PAGE, response_only=True)],
    )


@_crud_schema(
    "device",
    "devices",
    examples.DEVICE,
    examples.DEVICE_CREATE,
    {"name": "Heat pump A1 (cellar)", "tags": ["heating", "cellar"]},
    "",
)
class DeviceViewSet(JSONErrorsMixin, _RegistryViewSet):
    """Devices of the sites you may see. Admins write; operators of a device's site change its name, metadata and
    tags; viewers read. ``apps.telemetry.api.device_views`` adds the latest values (telemetry's) to each device."""

    serializer_class = DeviceSerializer
    filterset_class = DeviceFilterSet
    pagination_class = DeviceCursorPagination
    lookup_field = "uid"
    lookup_value_regex = LOOKUP_SEGMENT
    renderer_classes = [JSONRenderer, DeviceCSVRenderer]

    @cached_property
    def now(self):
        """One instant per request: the status filter and the status shown agree."""
        return timezone.now()

    def get_queryset(self):
        devices = device_list_for_user(user=self.request.user).select_related("gateway")
        return devices_with_status(devices, now=self.now)

    def get_renderers(self):
        # CSV is the list's (the export); everything else answers JSON (errors too: JSONErrorsMixin).
        if self.action == "list":
            return super().get_renderers()
        return [JSONRenderer()]

    def perform_content_negotiation(self, request, force=False):
        # DRF answers an unknown ?format= with a 404, which reads as "no such list": say which formats there are.
        requested = request.query_params.get(api_settings.URL_FORMAT_OVERRIDE)
        if not force and requested and requested not in {renderer.format for renderer in self.get_renderers()}:
            raise ValidationError({"format": [f"{requested[:20]!r} is not a format of this endpoint: json or csv."]})
        return super().perform_content_negotiation(request, force)

    def filter_queryset(self, queryset):
        # DjangoFilterBackend's work, with the request's instant for the status filter.
        filterset = DeviceFilterSet(self.request.query_params, queryset=queryset, request=self.request, now=self.now)
        if not filterset.is_valid():
            raise translate_validation(filterset.errors)
        return filterset.qs

    @extend_schema(
        summary="List devices with status and latest values",
        description=DEVICE_LIST_DESCRIPTION,
        parameters=[OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"], description="csv: export")],
        responses={
            (200, "application/json"): None,
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR, description="uid,name,site,type,gateway,tags,metadata"
            ),
        },
        examples=[OpenApiExample("a page", value=examples.DEVICE_PAGE, response_only=True)],
    )
    def list(self, request, *args, **kwargs):
        if request.accepted_renderer.format == DeviceCSVRenderer.format:
            devices = self.filter_queryset(self.get_queryset()).order_by("uid")
            response = StreamingHttpResponse(
                imports.devices_csv(devices.iterator(chunk_size=2000)), content_type="text/csv; charset=utf-8"
            )
            response["Content-Disposition"] = 'attachment; filename="devices.csv"'
            return response
        return super().list(request, *args, **kwargs)

    @extend_schema(
        summary="Delete, deactivate or purge a device",
        description="Organization admins. A device without history is deleted (204). One with history is "
        "deactivated (200: new readings are refused, the history stays), unless `purge=true` confirms that it is "
        "deleted with all its readings (204).",
        parameters=[DeviceRemoveQuerySerializer],
        responses={
            200: OpenApiResponse(DeviceRemovedSerializer, description="Deactivated: it has history"),
            204: None,
            403: FORBIDDEN,
            404: NOT_FOUND,
        },
    )
    def destroy(self, request, *args, **kwargs):
        device = self.get_object()
        query = DeviceRemoveQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        result = services.device_remove(user=request.user, device=device, purge=query.validated_data["purge"])
        if result == services.DeviceRemoval.DEACTIVATED:
            body = {"result": result, "device": self.get_serializer(device).data}
            return Response(body, status=status.HTTP_200_OK)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Import devices (CSV or JSON)",
        description=imports.__doc__.strip().split("\n\n", 1)[1]
        + "\n\nAnswers 200 with the counts, or 400 with every row's errors and nothing written.",
        parameters=[ImportQuerySerializer],
        request={
            "text/csv": OpenApiTypes.STR,
            "application/json": ImportRowSerializer(many=True),
        },
        responses={200: ImportResultSerializer, 400: ImportResultSerializer, 403: FORBIDDEN, 409: CONFLICT},
        examples=[
            OpenApiExample("CSV", value=examples.IMPORT_CSV, request_only=True, media_type="text/csv"),
            OpenApiExample("JSON", value=examples.IMPORT_JSON, request_only=True, media_type="application/json"),
            OpenApiExample("imported", value=examples.IMPORT_OK, response_only=True, status_codes=["200"]),
            OpenApiExample("refused", value=examples.IMPORT_ERRORS, response_only=True, status_codes=["400"]),
        ],
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="import",
        url_name="import",
        parser_classes=[BoundedJSONParser, CSVTextParser],
        filter_backends=[],
        pagination_class=None,
    )
    def import_devices(self, request):
        query = ImportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        try:
            rows = (
                imports.rows_from_csv(request.data)
                if isinstance(request.data, str)
                else imports.rows_from_json(request.data)
            )
        except imports.ImportFileError as error:
            raise ParseError(str(error)) from None
        plan = imports.device_import_plan(user=request.user, rows=rows, mode=query.validated_data["mode"])
        if plan.errors or query.validated_data["dry_run"]:
            body = {**plan.summary(), "dry_run": query.validated_data["dry_run"]}
            return Response(body, status=status.HTTP_400_BAD_REQUEST if plan.errors else status.HTTP_200_OK)
        return Response({**imports.device_import_apply(plan=plan), "dry_run": False})
