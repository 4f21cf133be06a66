"""The list pages' filter controls and the note of the alert buttons (POST).

The filters themselves are the API's FilterSets (``apps.devices.filters``, ``apps.alerts.filters``); a page only
adjusts how their form renders: placeholders, the site switcher's choice shown, the tags in use as a list.
"""

from django import forms


class AlertNoteForm(forms.Form):
    """The note of an acknowledge or resolve button: the API's AlertNoteSerializer in form shape (at most 2000
    characters; Django's CharField refuses NUL, which PostgreSQL cannot store)."""

    note = forms.CharField(required=False, max_length=2000)


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
