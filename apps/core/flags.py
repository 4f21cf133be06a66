"""Feature flags: the names the product checks and ``flag_active``, the one way code asks about one.

Flags are django-waffle flags, switched on per organization by ``apps.users.models.FlagOrganization`` rows, edited
by superusers in the admin (*Waffle > Flags*, with their organizations inline) and listed by
``manage.py fieldwatch_doctor``. A flag is on for an organization when its *everyone* is Yes, or when it is
Unknown and the organization is listed; *everyone* No switches it off everywhere.

``flag_active`` is meant for hot paths (ingest asks per message in a dialect other than its own): answers are
kept in the process for ``LOCAL_TTL_SECONDS`` on top of waffle's own cache (Redis), so a change in the admin is
seen within that long. It never raises: when the database or the cache fails, the flag reads as its caller's
``default`` (off unless said otherwise: what is new and risky stays off) and the failure is logged, at
most once per flag and TTL.

The dialect flags start on for everyone (they shipped on; migration users 0007): an admin narrows one to some
organizations, or switches it off. ``discovery_auto_register`` starts off.
"""

import logging
import threading
import time

from waffle import get_waffle_flag_model

logger = logging.getLogger(__name__)

# Ingest dialects beyond Fieldwatch's JSON/MessagePack and ThingsBoard's device API, switched on per organization.
DIALECT_LINE_PROTOCOL = "dialect_line_protocol"  # InfluxDB line protocol
DIALECT_SENML = "dialect_senml"  # RFC 8428 SenML
DIALECT_SPARKPLUG = "dialect_sparkplug"  # Eclipse Sparkplug B
DIALECT_THINGSBOARD = "dialect_thingsboard"  # ThingsBoard gateway API
# Readings of an unknown device under a gateway with the auto-register policy create the device.
DISCOVERY_AUTO_REGISTER = "discovery_auto_register"

FLAGS = {
    DIALECT_LINE_PROTOCOL: "Accept InfluxDB line protocol payloads.",
    DIALECT_SENML: "Accept SenML (RFC 8428) payloads.",
    DIALECT_SPARKPLUG: "Accept Sparkplug B payloads.",
    DIALECT_THINGSBOARD: "Accept the ThingsBoard gateway API's payloads.",
    DISCOVERY_AUTO_REGISTER: "Let gateways with the auto-register policy create unknown devices.",
}

LOCAL_TTL_SECONDS = 5.0

_local: dict[tuple[str, int | None, bool], tuple[float, bool]] = {}
_lock = threading.Lock()


def flag_active(name: str, organization_id: int | None = None, *, default: bool = False) -> bool:
    """Whether flag ``name`` is on (for ``organization_id``, when given).

    ``default`` is the answer for a flag nobody created and while the flag cannot be read: off for what is new
    and risky, on for a gate whose closing would refuse data senders already rely on (the dialects: a cache
    outage or a deleted flag must not turn readings away)."""
    key = (name, organization_id, default)
    now = time.monotonic()
    cached = _local.get(key)
    if cached is not None and cached[0] > now:
        return cached[1]
    try:
        active = _evaluate(name, organization_id, default)
    except Exception:  # noqa: BLE001 - a flag check must never fail its caller
        logger.warning("feature flag %s could not be read; treating it as %s", name, "on" if default else "off")
        active = default
    with _lock:
        _local[key] = (now + LOCAL_TTL_SECONDS, active)
    return active


def _evaluate(name: str, organization_id: int | None, default: bool) -> bool:
    flag = get_waffle_flag_model().get(name)  # waffle's cached read; an unsaved instance when there is no such flag
    if flag.pk is None:
        return default
    if flag.everyone is not None:
        return flag.everyone
    # The users app's FlagOrganization rows, through their reverse accessor (core imports no app above it).
    return organization_id is not None and flag.organization_grants.filter(organization_id=organization_id).exists()


def flags_forget() -> None:
    """Drop the in-process answers (tests, and a process that must see a change at once)."""
    with _lock:
        _local.clear()


def flag_states() -> list[tuple[str, str]]:
    """``(name, state)`` of every flag, for the doctor: "on", "off", or the organizations it is on for."""
    model = get_waffle_flag_model()
    flags = {flag.name: flag for flag in model.objects.prefetch_related("organization_grants__organization")}
    states = []
    for name in sorted(flags.keys() | FLAGS.keys()):
        flag = flags.get(name)
        if flag is None:
            state = "off (not created)"
        elif flag.everyone is not None:
            state = "on for everyone" if flag.everyone else "off for everyone"
        else:
            organizations = sorted(grant.organization.slug for grant in flag.organization_grants.all())
            state = f"on for {', '.join(organizations)}" if organizations else "off (no organization)"
        states.append((name, state))
    return states
