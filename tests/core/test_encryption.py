"""Secrets the platform reads back are encrypted at rest, rotate with FIELDWATCH_SECRET_KEYS, and stay write-only in
the admin."""

import importlib
import io

import pytest
from cryptography.fernet import Fernet
from django.apps import apps as django_apps
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from apps.alerts.choices import ChannelKind
from apps.alerts.models import NotificationChannel
from apps.core.encryption import PREFIX, SecretUnreadable

OLD_KEY, NEW_KEY = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def stored(channel) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT webhook_secret FROM alerts_notificationchannel WHERE id = %s", [channel.pk])
        return cursor.fetchone()[0]


def hook(organization, secret="whsec-plain-text-secret"):
    return NotificationChannel.objects.create(
        organization=organization,
        name="Pager",
        kind=ChannelKind.WEBHOOK,
        webhook_url="https://pager.example/hook",
        webhook_secret=secret,
    )


def test_the_database_holds_no_plaintext_secret_and_the_model_reads_it_back(organization):
    channel = hook(organization)

    raw = stored(channel)
    assert raw.startswith(PREFIX) and "whsec-plain-text-secret" not in raw
    assert NotificationChannel.objects.get(pk=channel.pk).webhook_secret == "whsec-plain-text-secret"


def test_an_empty_secret_stays_empty(organization):
    assert stored(hook(organization, secret="")) == ""


def test_rotation_new_key_first_reencrypt_then_the_old_key_can_go(organization, settings):
    settings.FIELDWATCH_SECRET_KEYS = [OLD_KEY]
    channel = hook(organization)
    under_old = stored(channel)

    settings.FIELDWATCH_SECRET_KEYS = [NEW_KEY, OLD_KEY]
    assert NotificationChannel.objects.get(pk=channel.pk).webhook_secret == "whsec-plain-text-secret"
    out = io.StringIO()
    call_command("secrets_reencrypt", stdout=out)
    assert "alerts.NotificationChannel.webhook_secret: 1 re-encrypted" in out.getvalue()
    assert stored(channel) != under_old

    settings.FIELDWATCH_SECRET_KEYS = [NEW_KEY]
    assert NotificationChannel.objects.get(pk=channel.pk).webhook_secret == "whsec-plain-text-secret"


def test_a_secret_no_key_decrypts_says_so(organization, settings):
    settings.FIELDWATCH_SECRET_KEYS = [OLD_KEY]
    channel = hook(organization)
    settings.FIELDWATCH_SECRET_KEYS = [NEW_KEY]

    with pytest.raises(SecretUnreadable, match="FIELDWATCH_SECRET_KEYS"):
        NotificationChannel.objects.get(pk=channel.pk)


def test_the_migration_encrypts_secrets_stored_in_plain_text_before_it(organization):
    channel = hook(organization)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE alerts_notificationchannel SET webhook_secret = 'legacy-plain' WHERE id = %s", [channel.pk]
        )
    migration = importlib.import_module("apps.alerts.migrations.0004_webhook_secret_encrypted")

    migration.encrypt_stored_secrets(django_apps, None)

    assert stored(channel).startswith(PREFIX)
    assert NotificationChannel.objects.get(pk=channel.pk).webhook_secret == "legacy-plain"


@pytest.fixture
def admin_client(alice):
    client = Client()
    client.force_login(alice)
    return client


def change(client, channel, **fields):
    data = {
        "organization": channel.organization_id,
        "name": channel.name,
        "kind": channel.kind,
        "email_to": "",
        "webhook_url": channel.webhook_url,
        "webhook_secret": "",
        "is_active": "on",
        **fields,
    }
    return client.post(reverse("admin:alerts_notificationchannel_change", args=[channel.pk]), data)


def test_the_admin_never_shows_the_secret_and_a_blank_field_keeps_it(admin_client, organization):
    channel = hook(organization)

    page = admin_client.get(reverse("admin:alerts_notificationchannel_change", args=[channel.pk]))
    assert page.status_code == 200
    assert "whsec-plain-text-secret" not in page.content.decode()
    assert "A secret is set (not shown)" in page.content.decode()

    assert change(admin_client, channel, name="Pager 2").status_code == 302
    channel.refresh_from_db()
    assert (channel.name, channel.webhook_secret) == ("Pager 2", "whsec-plain-text-secret")


def test_the_admin_replaces_or_removes_the_secret(admin_client, organization):
    channel = hook(organization)

    assert change(admin_client, channel, webhook_secret="whsec-new").status_code == 302
    channel.refresh_from_db()
    assert channel.webhook_secret == "whsec-new"

    assert change(admin_client, channel, remove_webhook_secret="on").status_code == 302
    channel.refresh_from_db()
    assert channel.webhook_secret == ""
