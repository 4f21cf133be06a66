"""The list pages' filter controls, the note of the alert buttons (POST) and the energy pages' custom range.

The filters themselves are the API's FilterSets (``apps.devices.filters``, ``apps.alerts.filters``); a page only
adjusts how their form renders: placeholders, the site switcher's choice shown, the tags in use as a list.
"""

from django import forms

from apps.core.time import INSTANT_MAX_YEAR, INSTANT_MIN_YEAR
from apps.telemetry.derived import MAX_BUCKETS
from apps.telemetry.energy import LONGEST_DAY_RANGE, DayRange


class AlertNoteForm(forms.Form):
    """The note of an acknowledge or resolve button: the API's AlertNoteSerializer in form shape (at most 2000
    characters; Django's CharField refuses NUL, which PostgreSQL cannot store)."""

    note = forms.CharField(required=False, max_length=2000)


class EnergyRangeForm(forms.Form):
    """A custom range of the energy pages: the site's local days ``from`` through ``to``, both included, at most
    ``LONGEST_DAY_RANGE`` of them (the energy API's limit for the hourly totals the pages fold). ``span`` in the
    cleaned data is the ``DayRange``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Named as in the query string (?from=&to=); "from" cannot be a class attribute.
        for name, label in (("from", "From"), ("to", "To")):
            self.fields[name] = forms.DateField(
                label=label,
                widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
                input_formats=["%Y-%m-%d"],
                error_messages={
                    "required": f"Give the {'first' if name == 'from' else 'last'} day of the range.",
                    "invalid": "Give a day as YYYY-MM-DD.",
                },
            )

    def clean(self):
        cleaned = super().clean()
        for name in ("from", "to"):
            day = cleaned.get(name)
            if day is not None and not INSTANT_MIN_YEAR <= day.year <= INSTANT_MAX_YEAR:
                self.add_error(name, f"Give a day from {INSTANT_MIN_YEAR} through {INSTANT_MAX_YEAR}.")
        if self.has_error("from") or self.has_error("to"):
            return cleaned
        span = DayRange(first=cleaned["from"], last=cleaned["to"])
        if span.first > span.last:
            self.add_error("to", "The last day is before the first: give a range from an earlier day to a later one.")
        elif span.days > LONGEST_DAY_RANGE:
            self.add_error(
                "to",
                f"{span.days} days is too long a range: at most {LONGEST_DAY_RANGE} days (the figures are computed "
                f"hour by hour, at most {MAX_BUCKETS:,} hours at a time).",
            )
        else:
            cleaned["span"] = span
        return cleaned


def filter_form_for_page(
    form: forms.Form, *, scope, site: str, tags: list[str] | None = None, device_types=None
) -> forms.Form:
    """``form`` (a FilterSet's) ready for a list page: the site choices from ``scope`` (loaded already; "all" a
    choice of its own), ``site`` (the switcher's choice) shown when the query string names none, ``tags`` and
    ``device_types`` offered as drop-downs; gateways and rules, which may be many, are typed in by id."""
    form.initial = {**form.initial, "site": site}
    if "site" in form.fields:
        form.fields["site"].widget.choices = [("all", "All my sites")] + [(str(s.id), s.name) for s in scope.sites]
    if device_types is not None and "device_type" in form.fields:
        form.fields["device_type"].widget.choices = [("", "Any type")] + [(str(t.id), t.name) for t in device_types]
    for name, placeholder in (("gateway", "Gateway id"), ("rule", "Rule id")):
        if name in form.fields:
            form.fields[name].widget = forms.TextInput(attrs={"placeholder": placeholder})
    if "q" in form.fields:
        form.fields["q"].widget.attrs.update({"placeholder": "Device id or name", "type": "search"})
    if "device" in form.fields:
        form.fields["device"].widget.attrs["placeholder"] = "e.g. hp-a-001"
    if tags is not None and "tag" in form.fields:
        form.fields["tag"].widget = forms.Select(choices=[("", "Any tag"), *((tag, tag) for tag in tags)])
    return form
