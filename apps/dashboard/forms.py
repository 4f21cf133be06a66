"""Filter forms of the list pages (GET, never bound to a model): they validate the query string and render labelled
controls; choices come from the user's own scope, so they list nothing the user may not see. And the note of the
alert buttons (POST)."""

from django import forms

from apps.alerts.choices import AlertStatus, Severity
from apps.devices.choices import DeviceStatus


def _site_choices(scope) -> list[tuple[str, str]]:
    return [("all", "All my sites")] + [(str(site.id), site.name) for site in scope.sites]


class DeviceFilterForm(forms.Form):
    q = forms.CharField(label="Search", required=False, max_length=128)
    site = forms.ChoiceField(label="Site", required=False)
    device_type = forms.TypedChoiceField(label="Type", required=False, coerce=int, empty_value=None)
    status = forms.ChoiceField(label="Status", required=False, choices=[("", "Any status"), *DeviceStatus.choices])
    tag = forms.ChoiceField(label="Tag", required=False)

    def __init__(self, *args, scope, device_types, tags, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["q"].widget.attrs.update({"placeholder": "Device id or name", "type": "search"})
        self.fields["site"].choices = _site_choices(scope)
        self.fields["device_type"].choices = [("", "Any type")] + [(str(t.id), t.name) for t in device_types]
        self.fields["tag"].choices = [("", "Any tag")] + [(tag, tag) for tag in tags]


class AlertFilterForm(forms.Form):
    status = forms.ChoiceField(
        label="Status", required=False, choices=[("", "Any status"), ("open", "Open"), *AlertStatus.choices]
    )
    severity = forms.ChoiceField(label="Severity", required=False, choices=[("", "Any severity"), *Severity.choices])
    site = forms.ChoiceField(label="Site", required=False)
    device = forms.CharField(label="Device id", required=False, max_length=128)

    def __init__(self, *args, scope, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["site"].choices = _site_choices(scope)
        self.fields["device"].widget.attrs["placeholder"] = "e.g. hp-a-001"


class AlertNoteForm(forms.Form):
    """The note of an acknowledge or resolve button: the API's AlertNoteSerializer in form shape (at most 2000
    characters; Django's CharField refuses NUL, which PostgreSQL cannot store)."""

    note = forms.CharField(required=False, max_length=2000)
