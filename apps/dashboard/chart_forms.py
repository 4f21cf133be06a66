"""The forms of the chart builder, the dashboards and the alert rule pages. Each only parses and resolves what the
user may see; the rules behind a save are the services' (``chart_services``, ``apps.alerts.services``)."""

from django import forms
from django.core.exceptions import ValidationError

from apps.alerts.models import AlertRule, EscalationPolicy
from apps.alerts.services import RULE_FIELDS
from apps.dashboard.models import MAX_CHART_SERIES, ChartRange, ChartStyle, SavedChart
from apps.devices.selectors import device_list_for_user, device_type_list_for_user
from apps.telemetry.api.fields import series_pair
from apps.telemetry.queries import AGGREGATES, INTERVALS

CHART_FIELDS = ("title", "shared", "range", "range_start", "range_end", "aggregate", "resolution", "style")


def series_resolve(*, user, values: list[str]) -> list:
    """``["<uid>:<metric>", ...]`` -> [(Device, metric)] among the user's devices, in order; one statement."""
    pairs = []
    for value in values:
        pair = series_pair(value)
        if pair is None:
            raise ValidationError(f"{value[:100]!r} is not a series (<device uid>:<metric>).")
        pairs.append(pair)
    if len(pairs) > MAX_CHART_SERIES:
        raise ValidationError(f"{len(pairs)} series picked; a chart takes at most {MAX_CHART_SERIES}.")
    devices = {d.uid: d for d in device_list_for_user(user=user).filter(uid__in={uid for uid, _ in pairs})}
    missing = sorted({uid for uid, _ in pairs if uid not in devices})
    if missing:
        raise ValidationError(f"No such device among the devices you may see: {', '.join(missing)}.")
    return [(devices[uid], metric) for uid, metric in pairs]


class ChartForm(forms.Form):
    title = forms.CharField(max_length=200)
    shared = forms.BooleanField(required=False, label="Share with my organization")
    range = forms.ChoiceField(choices=ChartRange.choices, initial=ChartRange.DAY)
    range_start = forms.DateTimeField(
        required=False, label="From", widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    range_end = forms.DateTimeField(
        required=False, label="To", widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    aggregate = forms.ChoiceField(choices=[(a, a) for a in AGGREGATES], initial="avg")
    resolution = forms.ChoiceField(choices=[(i, i) for i in INTERVALS], initial="auto")
    style = forms.ChoiceField(choices=ChartStyle.choices, initial=ChartStyle.LINE)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def clean(self):
        cleaned = super().clean()
        try:
            cleaned["series"] = series_resolve(user=self.user, values=self.data.getlist("series"))
        except ValidationError as error:
            self.add_error(None, error)
        return cleaned

    @classmethod
    def initial_for(cls, chart: SavedChart) -> dict:
        return {name: getattr(chart, name) for name in CHART_FIELDS}


class DashboardForm(forms.Form):
    title = forms.CharField(max_length=200)
    shared = forms.BooleanField(required=False, label="Share with my organization")


class RuleForm(forms.ModelForm):
    """An alert rule on the sites the user operates; validated by ``alert_rule_validate`` on save or backtest."""

    class Meta:
        model = AlertRule
        fields = [name for name in RULE_FIELDS]
        widgets = {
            name: forms.TextInput(attrs={"placeholder": "hh:mm:ss, e.g. 00:05:00"})
            for name in ("for_duration", "rate_window", "silence")
        }

    def __init__(self, *args, user, operable_sites, **kwargs):
        super().__init__(*args, **kwargs)
        site_ids = [site.id for site in operable_sites]
        self.fields["site"].queryset = self.fields["site"].queryset.filter(pk__in=site_ids)
        self.fields["device"].queryset = device_list_for_user(user=user).filter(site_id__in=site_ids)
        self.fields["device_type"].queryset = device_type_list_for_user(user=user)
        self.fields["escalation_policy"].queryset = EscalationPolicy.objects.filter(
            organization_id=user.organization_id
        )
        for name in ("operator", "rate_direction"):
            self.fields[name].required = False

    def _post_clean(self):
        # The model's clean() and constraints are the services' job here (with their specific messages).
        pass
