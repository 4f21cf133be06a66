"""The filters of the registry's lists, one FilterSet per resource (django-filter), used by the REST API
(``DjangoFilterBackend``) and the dashboard's device list alike, so a query string means the same rows in both.

Every choice a filter offers comes from the requesting user's scope (``apps.devices.selectors``): a site, type or
gateway the user may not see is refused as one that does not exist (a 400 in the API; ignored by the dashboard).
"""

import datetime

import django_filters
from django import forms
from django.db.models import Q
from django.utils import timezone

from apps.core.time import INSTANT_MAX_YEAR, INSTANT_MIN_YEAR, instant_in_range
from apps.devices.choices import DeviceStatus
from apps.devices.models import Device, DeviceType, Gateway, Site
from apps.devices.selectors import (
    device_status_q,
    device_type_list_for_user,
    gateway_list_for_user,
    site_list_for_user,
)

ALL_SITES = "all"  # what the dashboard's site switcher sends for "every site I may see"


class ScopedModelChoiceField(forms.ModelChoiceField):
    """A choice among the objects of ``resolve_scope()``, which is called only when a value is given: an unfiltered
    list costs no query for its filters (the selectors check the user's role when called). With ``allow_all``,
    ``all`` (the site switcher's "All my sites") reads as no filter."""

    def __init__(self, *args, resolve_scope=None, allow_all=False, **kwargs):
        self.resolve_scope, self.allow_all = resolve_scope, allow_all
        super().__init__(*args, **kwargs)

    def to_python(self, value):
        if value in self.empty_values or (self.allow_all and value == ALL_SITES):
            return None
        if self.resolve_scope is not None:
            self.queryset = self.resolve_scope()
        return super().to_python(value)


class ScopedModelChoiceFilter(django_filters.ModelChoiceFilter):
    """``ModelChoiceFilter`` over ``scope(user)`` (a selector), resolved lazily by ``ScopedModelChoiceField``."""

    field_class = ScopedModelChoiceField

    def __init__(self, *args, scope, model, allow_all=False, **kwargs):
        self.scope, self.allow_all = scope, allow_all
        super().__init__(*args, queryset=model.objects.none(), **kwargs)

    @property
    def field(self):
        if not hasattr(self, "_field"):
            request = self.get_request()
            self.extra.update(
                resolve_scope=lambda: self.scope(user=request.user) if request is not None else self.queryset,
                allow_all=self.allow_all,
            )
        return super().field


class InstantFormField(django_filters.fields.IsoDateTimeField):
    """An ISO-8601 instant, normalised to UTC and within the years Fieldwatch deals in (``apps.core.time``).

    UTC before it reaches the database: PostgreSQL refuses offsets past ±15:59 that Python accepts (a query with
    ``+17:49`` failed as a 500), and a time without offset is UTC, as everywhere in the API."""

    default_error_messages = {
        "out_of_range": f"Give an instant from {INSTANT_MIN_YEAR} through {INSTANT_MAX_YEAR}.",
    }

    def to_python(self, value):
        moment = super().to_python(value)
        if moment is None:
            return None
        if timezone.is_naive(moment):
            moment = moment.replace(tzinfo=datetime.UTC)
        try:
            moment = moment.astimezone(datetime.UTC)
        except (OverflowError, ValueError):  # year 1 or 9999 shifted by its offset past datetime's range
            raise forms.ValidationError(self.error_messages["out_of_range"], code="out_of_range") from None
        if not instant_in_range(moment):
            raise forms.ValidationError(self.error_messages["out_of_range"], code="out_of_range")
        return moment


class InstantFilter(django_filters.IsoDateTimeFilter):
    """``IsoDateTimeFilter`` through ``InstantFormField``: every time-range filter of every list."""

    field_class = InstantFormField


class SiteFilter(ScopedModelChoiceFilter):
    """``?site=<id>`` among the user's sites (``all``: every one); shared by the device and alert FilterSets."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label", "Site")
        kwargs.setdefault("empty_label", "All my sites")
        super().__init__(*args, scope=site_list_for_user, model=Site, allow_all=True, **kwargs)


class DeviceFilterSet(django_filters.FilterSet):
    """Search, site, type, gateway, status (online/offline/never seen/inactive), tag and last-seen range."""

    q = django_filters.CharFilter(
        label="Search", method="filter_search", max_length=128, help_text="Part of the device id or name"
    )
    site = SiteFilter(field_name="site")
    device_type = ScopedModelChoiceFilter(
        label="Type", scope=device_type_list_for_user, model=DeviceType, empty_label="Any type", help_text="Type id"
    )
    gateway = ScopedModelChoiceFilter(
        label="Gateway",
        scope=gateway_list_for_user,
        model=Gateway,
        to_field_name="uid",
        empty_label="Any gateway",
        help_text="Gateway id (uid)",
    )
    status = django_filters.ChoiceFilter(
        label="Status", choices=DeviceStatus.choices, method="filter_status", empty_label="Any status"
    )
    tag = django_filters.CharFilter(label="Tag", method="filter_tag", max_length=50)
    last_seen_after = InstantFilter(
        label="Seen since", field_name="last_seen", lookup_expr="gte", help_text="ISO-8601; inclusive"
    )
    last_seen_before = InstantFilter(
        label="Seen before", field_name="last_seen", lookup_expr="lt", help_text="ISO-8601; exclusive"
    )

    class Meta:
        model = Device
        fields = ["q", "site", "device_type", "gateway", "status", "tag", "last_seen_after", "last_seen_before"]

    def __init__(self, *args, now=None, **kwargs):
        super().__init__(*args, **kwargs)
        # One instant for the whole request: the status filter and the status shown must agree.
        self.now = now or timezone.now()

    def filter_search(self, queryset, name, value):
        return queryset.filter(Q(uid__icontains=value) | Q(name__icontains=value))

    def filter_status(self, queryset, name, value):
        return queryset.filter(device_status_q(DeviceStatus(value), self.now))

    def filter_tag(self, queryset, name, value):
        return queryset.filter(tags__contains=[value])


class SiteFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(label="Search", method="filter_search", max_length=200, help_text="Part of the name")

    class Meta:
        model = Site
        fields = ["q"]

    def filter_search(self, queryset, name, value):
        return queryset.filter(Q(name__icontains=value) | Q(address__icontains=value))


class DeviceTypeFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(label="Search", field_name="name", lookup_expr="icontains", max_length=200)

    class Meta:
        model = DeviceType
        fields = ["q"]


class GatewayFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(label="Search", method="filter_search", max_length=200, help_text="Id or name")
    site = SiteFilter(field_name="site")

    class Meta:
        model = Gateway
        fields = ["q", "site"]

    def filter_search(self, queryset, name, value):
        return queryset.filter(Q(uid__icontains=value) | Q(name__icontains=value))
