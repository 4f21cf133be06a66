"""The alerts API: list and read alerts with their history, acknowledge and resolve them, manage alert rules.

Views parse, call one selector or service and answer. Reads go through apps.alerts.selectors, so another tenant's
alert or rule is a 404; the services re-check write rights inside their transaction (viewers get 403).
"""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.response import Response

from apps.alerts.api.serializers import (
    AlertDetailSerializer,
    AlertNoteSerializer,
    AlertRuleSerializer,
    AlertSerializer,
)
from apps.alerts.filters import AlertFilterSet
from apps.alerts.selectors import alert_get_for_user, alert_list_for_user, alert_rule_list_for_user
from apps.alerts.services import AlertStateError, alert_acknowledge, alert_resolve, alert_rule_delete

NOT_FOUND = "No such alert among those you may see."


@extend_schema_view(
    list=extend_schema(
        summary="List alerts",
        description="Alerts on the sites you may see, newest first, paginated (`limit`, `offset`); the filters are "
        "the dashboard's alert list's (`status=open`: active or acknowledged).",
    ),
    retrieve=extend_schema(summary="An alert with its history", responses={200: AlertDetailSerializer}),
)
class AlertViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = AlertSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = AlertFilterSet

    def get_queryset(self):
        return alert_list_for_user(user=self.request.user)

    def get_object(self):
        try:
            alert_id = int(self.kwargs["pk"])
        except ValueError:
            raise NotFound(NOT_FOUND) from None
        alert = alert_get_for_user(user=self.request.user, alert_id=alert_id)
        if alert is None:
            raise NotFound(NOT_FOUND)
        return alert

    def get_serializer_class(self):
        return AlertDetailSerializer if self.action != "list" else AlertSerializer

    def _transition(self, request, service):
        alert = self.get_object()
        body = AlertNoteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            service(alert=alert, user=request.user, note=body.validated_data["note"])
        except DjangoPermissionDenied as error:
            raise PermissionDenied(str(error)) from None
        except AlertStateError as error:
            return Response({"detail": error.messages[0]}, status=status.HTTP_409_CONFLICT)
        return Response(AlertDetailSerializer(self.get_object()).data)

    @extend_schema(
        summary="Acknowledge an alert",
        description="Someone is on it: records who, when and the note, and stops escalation. Operators and "
        "admins of the site only.",
        request=AlertNoteSerializer,
        responses={
            200: AlertDetailSerializer,
            403: OpenApiResponse(description="Viewers may not acknowledge"),
            404: OpenApiResponse(description="No such alert among those you may see"),
            409: OpenApiResponse(description="Already acknowledged or resolved"),
        },
    )
    @action(detail=True, methods=["post"])
    def acknowledge(self, request, pk=None):
        return self._transition(request, alert_acknowledge)

    @extend_schema(
        summary="Resolve an alert",
        description="Closes the alert. If its condition still holds, the next trigger opens a new alert.",
        request=AlertNoteSerializer,
        responses={
            200: AlertDetailSerializer,
            403: OpenApiResponse(description="Viewers may not resolve"),
            404: OpenApiResponse(description="No such alert among those you may see"),
            409: OpenApiResponse(description="Already resolved"),
        },
    )
    @action(detail=True, methods=["post"])
    def resolve(self, request, pk=None):
        return self._transition(request, alert_resolve)


@extend_schema_view(
    list=extend_schema(summary="List alert rules", description="Rules scoped to the sites you may see."),
    create=extend_schema(
        summary="Create an alert rule",
        description="Admins and operators of the rule's site. Invalid rules (unknown metric for the device type, "
        "clear threshold on the wrong side, negative durations, missing fields for the kind) answer 400 with a "
        "message per field.",
    ),
    partial_update=extend_schema(summary="Change an alert rule"),
    update=extend_schema(summary="Replace an alert rule"),
    destroy=extend_schema(summary="Delete an alert rule (and its alerts); disable it to keep the history"),
)
class AlertRuleViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = AlertRuleSerializer

    def get_queryset(self):
        return alert_rule_list_for_user(user=self.request.user)

    def handle_exception(self, exc):
        if isinstance(exc, DjangoPermissionDenied):
            exc = PermissionDenied(str(exc))
        return super().handle_exception(exc)

    def perform_destroy(self, instance):
        alert_rule_delete(rule=instance, user=self.request.user)
