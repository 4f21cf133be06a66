"""``manage.py seed_demo``: the demo organization of ``apps/devices/demo.py``, idempotently.

Every row is found by its natural key and brought back to the catalogue's values, so running it again changes
nothing new. Three things are only ever created, never redone: a user's password (an admin may have changed it), a
gateway's API key (its plaintext exists once, in this command's output) and the broker (MQTT) logins of the demo
devices and gateways (printed once, and kept in DEMO_MQTT_PASSWORDS_PATH for ``manage.py simulate``: a login is
issued again only when that file does not hold a valid password for it).

It lives in the dashboard, the top of the app order, because it seeds every app below it (users, devices, alerts).
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from apps.alerts.choices import ChannelKind
from apps.alerts.models import AlertRule, EscalationPolicy, EscalationStep, NotificationChannel
from apps.core.mqtt import broker_address
from apps.devices import demo
from apps.devices.broker_auth import mqtt_credential_issue
from apps.devices.demo_logins import demo_passwords_keep, demo_passwords_valid
from apps.devices.models import Device, DeviceType, Gateway, MetricDefinition, Site
from apps.devices.services import api_key_issue, user_grant_site
from apps.users.models import Organization, User
from apps.users.services import user_set_role

ADMIN_URL = "http://127.0.0.1:8000/admin/"


class Command(BaseCommand):
    help = "Create the demo organization, sites, devices, gateways, users, API keys and broker logins (idempotent)."

    def handle(self, *args, **options):
        with transaction.atomic():
            summary, users_created, keys = self._seed()
            broker_logins = self._broker_logins()
        # Printed (and kept) after the commit, so a plaintext is never shown for a key that was rolled back.
        kept = False
        try:
            kept = demo_passwords_keep(broker_logins)
        except OSError as error:
            self.stderr.write(f"The demo broker passwords could not be kept ({error}); `simulate` will lack them.")
        for line in summary:
            self.stdout.write(line)

        self.stdout.write("")
        self.stdout.write(self.style.WARNING("Demo logins — for the local demo only; change or delete these users"))
        self.stdout.write(self.style.WARNING("before this installation is reachable by anyone else:"))
        for user in demo.USERS:
            access = f"{user.role.label.split(' (')[0]}, {', '.join(name for name, _ in user.sites) or 'all sites'}"
            note = "" if user.username in users_created else "(existing user: password left unchanged)"
            self.stdout.write(f"  {user.username:<6} / {user.password:<18} {access:<18} {note}".rstrip())

        self.stdout.write("")
        self.stdout.write("Gateway API keys (HTTPS ingest: POST /api/v1/ingest with header 'X-API-Key: <key>'):")
        for gateway_uid, plaintext, prefix in keys:
            if plaintext:
                self.stdout.write(f"  {gateway_uid:<10} {self.style.SUCCESS(plaintext)}")
            else:
                self.stdout.write(f"  {gateway_uid:<10} already seeded (fwk_{prefix}…, shown only when it was issued)")
        if any(plaintext for _, plaintext, _ in keys):
            self.stdout.write(
                self.style.WARNING("  Copy the keys now: only their hash is stored, they are not shown again.")
            )

        self.stdout.write("")
        broker = broker_address()
        self.stdout.write(f"Broker (MQTT) logins of the demo devices and gateways, {broker} (username = uid):")
        for username, password in sorted(broker_logins.items()):
            self.stdout.write(f"  {username:<10} {self.style.SUCCESS(password)}")
        if broker_logins:
            note = (
                f"also kept, for `simulate`, in {settings.DEMO_MQTT_PASSWORDS_PATH} (mode 0600, this machine only)"
                if kept
                else "copy them now, they are not shown again"
            )
            self.stdout.write(self.style.WARNING(f"  Only their hash is in the database; {note}."))
            self.stdout.write(
                f"  e.g. mosquitto_pub -h {broker.host} -p {broker.port} -q 1 -u <uid> -P <password> "
                f"-t {settings.MQTT_TOPIC_PREFIX}/devices/<uid>/telemetry -m '{{\"values\": {{...}}}}'"
            )
        else:
            path = settings.DEMO_MQTT_PASSWORDS_PATH
            self.stdout.write(f"  already issued ({f'kept in {path}' if path else 'shown only when issued'})")

        self.stdout.write("")
        self.stdout.write(f"Admin: {ADMIN_URL}   Telemetry: python manage.py simulate")

    def _broker_logins(self) -> dict[str, str]:
        """Issue a broker login for each demo gateway and device that needs one; the new passwords by username.

        With a kept-passwords file, "needs one" is "the file holds no valid password for it" (the simulator must
        know every password); without one, "has no active login" (it would be printed once, then forgotten).
        """
        owners = [
            *Gateway.objects.filter(uid__in=[spec.gateway_uid for spec in demo.SITES]),
            *Device.objects.filter(uid__in=[spec.uid for spec in demo.DEVICES]),
        ]
        valid = demo_passwords_valid(owner.uid for owner in owners)
        issued = {}
        for owner in owners:
            if owner.uid in valid:
                continue
            if (
                not settings.DEMO_MQTT_PASSWORDS_PATH
                and owner.mqtt_credentials.filter(revoked_at__isnull=True).exists()
            ):
                continue
            kind = "device" if isinstance(owner, Device) else "gateway"
            credential, password = mqtt_credential_issue(**{kind: owner})
            issued[credential.username] = password
        return issued

    def _escalation_policy(self, organization) -> EscalationPolicy:
        """The demo's policy: its email channel at every step (found by name, brought back to the catalogue)."""
        channel, _ = NotificationChannel.objects.update_or_create(
            organization=organization,
            name=demo.ESCALATION_CHANNEL["name"],
            defaults={"kind": ChannelKind.EMAIL, "email_to": demo.ESCALATION_CHANNEL["email_to"], "is_active": True},
        )
        policy, _ = EscalationPolicy.objects.get_or_create(organization=organization, name=demo.ESCALATION_POLICY)
        for position, delay in enumerate(demo.ESCALATION_DELAYS, start=1):
            step, _ = EscalationStep.objects.update_or_create(
                policy=policy, position=position, defaults={"delay": delay}
            )
            step.channels.set([channel])
        return policy

    def _seed(self):
        organization, org_created = Organization.objects.get_or_create(
            slug=demo.ORGANIZATION_SLUG, defaults={"name": demo.ORGANIZATION_NAME}
        )
        counts = {
            "sites": 0,
            "gateways": 0,
            "device types": 0,
            "metrics": 0,
            "devices": 0,
            "alert rules": 0,
            "users": 0,
        }

        def count(kind, created):
            counts[kind] += created

        sites, gateways = {}, {}
        for spec in demo.SITES:
            site, created = Site.objects.update_or_create(
                organization=organization,
                name=spec.name,
                defaults={
                    "timezone": spec.timezone,
                    "address": spec.address,
                    "latitude": spec.latitude,
                    "longitude": spec.longitude,
                    "emission_factor_kg_per_kwh": spec.emission_factor_kg_per_kwh,
                },
            )
            count("sites", created)
            gateway, created = Gateway.objects.update_or_create(
                uid=spec.gateway_uid, defaults={"site": site, "name": spec.gateway_name}
            )
            count("gateways", created)
            sites[spec.name], gateways[spec.name] = site, gateway

        device_types = {}
        for spec in demo.DEVICE_TYPES:
            device_type, created = DeviceType.objects.update_or_create(
                organization=organization, name=spec.name, defaults={"description": spec.description}
            )
            count("device types", created)
            for metric in spec.metrics:
                _, created = MetricDefinition.objects.update_or_create(
                    device_type=device_type,
                    key=metric.key,
                    defaults={
                        "display_name": metric.display_name,
                        "unit": metric.unit,
                        "kind": metric.kind,
                        "min_value": metric.min_value,
                        "max_value": metric.max_value,
                        "role": metric.role,
                    },
                )
                count("metrics", created)
            device_types[spec.name] = device_type

        for spec in demo.DEVICES:
            _, created = Device.objects.update_or_create(
                uid=spec.uid,
                defaults={
                    "name": spec.name,
                    "site": sites[spec.site],
                    "device_type": device_types[spec.device_type],
                    "gateway": gateways[spec.site] if spec.behind_gateway else None,
                    "metadata": spec.metadata,
                    "tags": list(spec.tags),
                },
            )
            count("devices", created)

        # Alert rules the simulator's supply-temperature spikes (84-88 °C for a few minutes) and silences trip.
        policy = self._escalation_policy(organization)
        for site in sites.values():
            for spec in demo.ALERT_RULES:
                _, created = AlertRule.objects.update_or_create(
                    organization=organization,
                    name=f"{spec['name']} ({site.name})",
                    defaults={
                        **spec["fields"],
                        "site": site,
                        "device_type": device_types[spec["device_type"]],
                        "escalation_policy": policy,
                    },
                )
                count("alert rules", created)

        users_created = set()
        for spec in demo.USERS:
            user, created = User.objects.get_or_create(
                username=spec.username,
                defaults={"organization": organization, "first_name": spec.first_name, "email": spec.email},
            )
            if user.organization_id != organization.id:
                raise CommandError(
                    f"User {spec.username!r} exists outside {organization}; rename or delete it, then run again."
                )
            if created:
                user.set_password(spec.password)
                user.save(update_fields=["password"])
                users_created.add(spec.username)
            count("users", created)
            user_set_role(user=user, role=spec.role)
            for site_name, operate in spec.sites:
                user_grant_site(user=user, site=sites[site_name], operate=operate)

        keys = []  # (gateway uid, plaintext or None, prefix)
        for gateway in gateways.values():
            existing = gateway.api_keys.order_by("-created_at").first()
            if existing is not None:
                keys.append((gateway.uid, None, existing.prefix))
                continue
            api_key, plaintext = api_key_issue(gateway=gateway, name="demo key (seed_demo)")
            keys.append((gateway.uid, plaintext, api_key.prefix))

        totals = {
            "sites": len(demo.SITES),
            "gateways": len(demo.SITES),
            "device types": len(demo.DEVICE_TYPES),
            "metrics": sum(len(spec.metrics) for spec in demo.DEVICE_TYPES),
            "devices": len(demo.DEVICES),
            "users": len(demo.USERS),
        }
        summary = [
            f"Demo organization {organization.name} ({organization.slug}): {'created' if org_created else 'exists'}"
        ]
        summary += [f"  {kind:<13} {totals[kind]:>3}  ({counts[kind]} created)" for kind in totals]
        return summary, users_created, keys
