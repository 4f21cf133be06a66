"""Dead letters and discovered devices over REST, for organization admins: list and read letters, replay a
selection through ingest (``apps.telemetry.replay``), list discovered devices and adopt one (with a replay of its
dead-lettered readings). Another organization's objects are 404; members who are not admins get 403."""

import base64

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import QueryDict
from django_filters.rest_framework import DjangoFilterBackend
from django_filters.utils import translate_validation
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from apps.core.api.fields import ScopedPrimaryKeyRelatedField
from apps.core.api.pagination import BoundedCursorPagination
from apps.devices.api.registry_serializers import service_errors
from apps.devices.models import DiscoveredDevice
from apps.devices.selectors import (
    device_type_list_for_user,
    discovered_device_list_for_user,
    user_configures_organization,
)
from apps.devices.services import discovered_device_adopt
from apps.telemetry.choices import RejectReason
from apps.telemetry.filters import DeadLetterFilterSet
from apps.telemetry.models import DeadLetter
from apps.telemetry.replay import adopted_devices_replay, dead_letters_replay
from apps.telemetry.selectors import dead_letter_list_for_user

ADMINS_ONLY = OpenApiResponse(description="Only organization admins see dead letters and discovered devices")


class DeadLetterSerializer(serializers.ModelSerializer):
    payload = serializers.SerializerMethodField(help_text="The payload as kept, base64")

    class Meta:
        model = DeadLetter
        fields = (
            "id",
            "received_at",
            "source",
            "origin",
            "site",
            "device_uid",
            "reason",
            "detail",
            "payload",
            "payload_size",
            "replayed_at",
            "replay_result",
            "replay_detail",
        )
        read_only_fields = fields

    def get_payload(self, letter) -> str:
        return base64.b64encode(bytes(letter.payload or b"")).decode()


class ReplaySummarySerializer(serializers.Serializer):
    letters = serializers.IntegerField(help_text="Letters replayed (at most 10,000 per call, oldest first)")
    messages = serializers.IntegerField(help_text="The messages they came from (a message's letters replay once)")
    stored = serializers.IntegerField()
    partly = serializers.IntegerField()
    refused = serializers.IntegerField()
    not_replayable = serializers.IntegerField()


class ReplayRequestSerializer(serializers.Serializer):
    """The dead letters' list filters, in the body."""

    device = serializers.CharField(required=False, max_length=128)
    reason = serializers.ListField(child=serializers.ChoiceField(choices=RejectReason.choices), required=False)
    site = serializers.IntegerField(required=False)
    received_after = serializers.DateTimeField(required=False)
    received_before = serializers.DateTimeField(required=False)


class _AdminsOnly:
    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if not user_configures_organization(user=request.user):
            raise PermissionDenied("Only organization admins see dead letters and discovered devices.")


class DeadLetterPagination(BoundedCursorPagination):
    page_size = 100
    ordering = "-id"


@extend_schema_view(
    list=extend_schema(summary="List dead letters", responses={200: DeadLetterSerializer(many=True), 403: ADMINS_ONLY}),
    retrieve=extend_schema(summary="Read a dead letter", responses={200: DeadLetterSerializer, 403: ADMINS_ONLY}),
)
class DeadLetterViewSet(_AdminsOnly, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = DeadLetter.objects.none()  # what the schema is derived from; get_queryset scopes every request
    lookup_value_regex = r"\d+"
    serializer_class = DeadLetterSerializer
    pagination_class = DeadLetterPagination
    filter_backends = [DjangoFilterBackend]
    filterset_class = DeadLetterFilterSet

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no user
            return self.queryset
        return dead_letter_list_for_user(user=self.request.user)

    @extend_schema(
        summary="Replay dead letters through ingest",
        description="Selects letters with the list's filters (given in the body), replays the oldest 10,000 of "
        "them through the normal ingest service and records each letter's result (`replay_result`). Idempotent: "
        "readings stored before are kept once, and what is refused again makes no new letters.",
        request=ReplayRequestSerializer,
        responses={
            200: ReplaySummarySerializer,
            400: OpenApiResponse(description="A filter is invalid"),
            403: ADMINS_ONLY,
        },
    )
    @action(detail=False, methods=["post"], url_path="replay")
    def replay(self, request):
        body = ReplayRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = {key: value for key, value in request.data.items() if key in body.fields}
        filterset = DeadLetterFilterSet(data=_query_dict(data), queryset=self.get_queryset(), request=request)
        if not filterset.is_valid():
            raise translate_validation(filterset.errors)
        summary = dead_letters_replay(letters=filterset.qs)
        return Response(summary.as_dict())


def _query_dict(data: dict) -> QueryDict:
    """The body's filters as the FilterSet reads a query string."""
    query = QueryDict(mutable=True)
    for key, value in data.items():
        if isinstance(value, list):
            query.setlist(key, [str(item) for item in value])
        elif value is not None:
            query[key] = str(value)
    return query


class DiscoveredDeviceSerializer(serializers.ModelSerializer):
    gateway = serializers.SlugRelatedField(slug_field="uid", read_only=True)
    adopted_device = serializers.SlugRelatedField(slug_field="uid", read_only=True)
    sample_payload = serializers.SerializerMethodField(help_text="The latest message that named it, base64")

    class Meta:
        model = DiscoveredDevice
        fields = (
            "id",
            "uid",
            "site",
            "gateway",
            "first_seen",
            "last_seen",
            "message_count",
            "metric_keys",
            "sample_payload",
            "adopted_device",
            "adopted_at",
        )
        read_only_fields = fields

    def get_sample_payload(self, discovered) -> str:
        return base64.b64encode(bytes(discovered.sample_payload or b"")).decode()


@extend_schema_field(OpenApiTypes.INT)
class DeviceTypeIdField(ScopedPrimaryKeyRelatedField):
    """A device type of the user's organization, by id."""


class AdoptSerializer(serializers.Serializer):
    device_type = DeviceTypeIdField(lambda user: device_type_list_for_user(user=user), help_text="Device type id")
    name = serializers.CharField(required=False, max_length=200, allow_blank=True)
    replay = serializers.BooleanField(default=True, help_text="Replay its dead-lettered readings into the new series")


class AdoptedSerializer(serializers.Serializer):
    device = serializers.CharField(help_text="The new device's uid")
    replay = ReplaySummarySerializer(allow_null=True)


class DiscoveredPagination(BoundedCursorPagination):
    page_size = 100
    ordering = "id"


@extend_schema_view(
    list=extend_schema(
        summary="List discovered devices", responses={200: DiscoveredDeviceSerializer(many=True), 403: ADMINS_ONLY}
    ),
    retrieve=extend_schema(
        summary="Read a discovered device", responses={200: DiscoveredDeviceSerializer, 403: ADMINS_ONLY}
    ),
)
class DiscoveredDeviceViewSet(_AdminsOnly, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = DiscoveredDevice.objects.none()
    lookup_value_regex = r"\d+"
    serializer_class = DiscoveredDeviceSerializer
    pagination_class = DiscoveredPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        return discovered_device_list_for_user(user=self.request.user)

    @extend_schema(
        summary="Adopt a discovered device",
        description="Registers it on its site, behind the gateway that sent it, with the type given (validated as "
        "any new device), and by default replays its dead-lettered readings.",
        request=AdoptSerializer,
        responses={
            201: AdoptedSerializer,
            400: OpenApiResponse(description="No such type, or the device is invalid"),
            403: ADMINS_ONLY,
            409: OpenApiResponse(description="Adopted already"),
        },
    )
    @action(detail=True, methods=["post"])
    def adopt(self, request, pk=None):
        discovered = self.get_object()
        if discovered.adopted_device_id is not None:
            return Response(
                {"detail": f"Adopted already, as {discovered.adopted_device.uid}."}, status=status.HTTP_409_CONFLICT
            )
        body = AdoptSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        try:
            device = discovered_device_adopt(
                user=request.user,
                discovered=discovered,
                device_type=body.validated_data["device_type"],
                name=body.validated_data.get("name", ""),
            )
        except DjangoValidationError as error:
            raise service_errors(error) from None
        except DjangoPermissionDenied as error:
            raise PermissionDenied(str(error)) from None
        summary = None
        if body.validated_data["replay"]:
            summary = adopted_devices_replay(devices=[device]).as_dict()
        return Response({"device": device.uid, "replay": summary}, status=status.HTTP_201_CREATED)
