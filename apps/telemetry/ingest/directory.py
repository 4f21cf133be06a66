"""The in-process catalogue ingest validates against: every device's rule by uid, every gateway's site by uid.

Ingest must never query per message, so a listener loads the whole catalogue once (a constant number of queries)
and keeps it in memory. Changes reach it through a version number in the shared cache: the catalogue signals
(apps.devices.signals) bump it after commit, and each process compares it with the version it loaded at most every
``check_interval`` seconds, reloading when it differs. A full reload also happens every ``max_age`` seconds, so a
bump lost while Redis was down, or a change made with ``QuerySet.update()`` (which sends no signal), is picked up
eventually rather than never.
"""

import datetime
import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType

from django.db.models import Prefetch
from jsonschema import Draft202012Validator

from apps.core.versioned import VersionedSnapshot, VersionKey
from apps.devices.choices import DiscoveryPolicy, UnknownMetricPolicy
from apps.devices.models import Device, DeviceType, Gateway, MetricDefinition, Site
from apps.telemetry.ingest.records import DeviceRule, GatewayRule, MetricRule
from apps.telemetry.ingest.units import canonical_unit

logger = logging.getLogger(__name__)

SCHEMA_ERROR_MAX_CHARS = 200

# Bumped (on commit) by apps/devices/signals.py when devices, types, metrics or gateways change.
CATALOGUE_VERSION = VersionKey("ingest:catalogue-version", "ingest catalogue")
CATALOGUE_VERSION_KEY = CATALOGUE_VERSION.key
catalogue_changed = CATALOGUE_VERSION.bump


def schema_checker(schema: dict) -> Callable[[dict], str | None] | None:
    """A function returning the first JSON Schema error of a ``values`` object (truncated), or None if it is valid.

    None when there is no schema. The validator is built once here and shared by every device of the type.
    """
    if not schema:
        return None
    validator = Draft202012Validator(schema)

    def check_schema(values: dict) -> str | None:
        error = next(validator.iter_errors(values), None)
        return None if error is None else error.message[:SCHEMA_ERROR_MAX_CHARS]

    return check_schema


class DeviceDirectory(VersionedSnapshot):
    """uid -> DeviceRule for every device and gateway uid -> GatewayRule, held in-process and refreshed on change.

    Queries per (re)load, whatever the fleet size: devices, device types, their metric definitions (one prefetch),
    sites, gateways. Types are read on their own rather than joined to every device row so that each payload schema
    is decoded and compiled once per type, not once per device.
    """

    version_key = CATALOGUE_VERSION

    def __init__(self, **freshness):
        super().__init__(**freshness)
        self._rules: Mapping[str, DeviceRule] = MappingProxyType({})
        self._gateways: Mapping[str, GatewayRule] = MappingProxyType({})
        self._types: Mapping[int, dict] = MappingProxyType({})
        self._site_organizations: Mapping[int, int] = MappingProxyType({})

    def rules(self) -> Mapping[str, DeviceRule]:
        """Every device's rule by uid (read-only). Loads on first use and refreshes when stale."""
        self.refresh_if_stale()
        return self._rules

    def gateways(self) -> Mapping[str, GatewayRule]:
        """Every gateway's rule (site, dialect options) by uid (read-only). Loads on first use and refreshes when
        stale."""
        self.refresh_if_stale()
        return self._gateways

    def site_organizations(self) -> Mapping[int, int]:
        """Every site's organization by site id (read-only): whose feature flags a message is checked against."""
        self.refresh_if_stale()
        return self._site_organizations

    def type_parts(self) -> Mapping[int, dict]:
        """What every device of a type shares, by type id (read-only): ``DeviceRule``'s fields beside the device's
        own, for a device not registered yet (auto-registration validates its first readings against them)."""
        self.refresh_if_stale()
        return self._types

    def gateway_site_id(self, gateway_uid: str) -> int | None:
        """The site of the gateway, or None when no gateway has this uid."""
        self.refresh_if_stale()
        gateway = self._gateways.get(gateway_uid)
        return None if gateway is None else gateway.site_id

    def _load(self) -> str:
        # Devices before types: a device's type is PROTECTed, so every type referenced here still exists below.
        devices = list(Device.objects.values_list("id", "uid", "site_id", "is_active", "device_type_id"))
        metric_defs = MetricDefinition.objects.only("device_type_id", "key", "min_value", "max_value", "unit")
        types = DeviceType.objects.only(
            "id", "unknown_metric_policy", "payload_schema", "raw_retention_days"
        ).prefetch_related(Prefetch("metrics", queryset=metric_defs))
        # What devices of one type share: the metrics dict and the compiled schema are one object per type.
        type_parts = {}
        for device_type in types:
            retention = device_type.raw_retention_days
            type_parts[device_type.id] = {
                "strict": device_type.unknown_metric_policy == UnknownMetricPolicy.STRICT,
                "metrics": {
                    m.key: MetricRule(m.key, m.min_value, m.max_value, canonical_unit(m.unit))
                    for m in device_type.metrics.all()
                },
                "check_schema": schema_checker(device_type.payload_schema),
                "raw_retention": datetime.timedelta(days=retention) if retention is not None else None,
            }

        rules = {}
        for device_id, uid, site_id, is_active, type_id in devices:
            parts = type_parts.get(type_id)
            if parts is None:  # device deleted and its type with it between the two queries
                continue
            rules[uid] = DeviceRule(device_id=device_id, uid=uid, site_id=site_id, is_active=is_active, **parts)

        sites = list(Site.objects.values_list("id", "organization_id", "discovery_policy"))
        site_organizations = {site_id: organization_id for site_id, organization_id, _ in sites}
        site_policies = {site_id: policy for site_id, _, policy in sites}
        gateways = {
            gateway.uid: GatewayRule(
                gateway.site_id,
                MappingProxyType(gateway.dialect_options()),
                gateway_id=gateway.id,
                organization_id=site_organizations.get(gateway.site_id, 0),
                discovery=gateway.discovery_policy or site_policies.get(gateway.site_id, DiscoveryPolicy.REJECT),
                auto_register_type_id=gateway.auto_register_type_id,
            )
            for gateway in Gateway.objects.only(
                "uid", "site_id", "discovery_policy", "auto_register_type_id", *Gateway.DIALECT_OPTION_FIELDS
            )
        }

        self._rules = MappingProxyType(rules)
        self._gateways = MappingProxyType(gateways)
        self._types = MappingProxyType(type_parts)
        self._site_organizations = MappingProxyType(site_organizations)
        return f"{len(rules)} devices, {len(type_parts)} device types, {len(gateways)} gateways"
