"""``manage.py broker_setup``: prepare the Mosquitto that `make run` starts (Procfile ``broker``), under ``var/``.

Run by ``make setup`` before ``broker_sync``; safe to run again (only a changed config is rewritten, an existing
listener password is kept).
"""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.core.mqtt import broker_address
from apps.devices.broker_auth import render_broker_config, tokens_path, write_atomically
from apps.devices.broker_plugin import PluginBuildError, plugin_build

TEMPLATE = Path(settings.BASE_DIR) / "docker" / "mosquitto" / "mosquitto.conf"
LISTENER_SECRET = "mqtt-listener-password"


class Command(BaseCommand):
    help = (
        "Write the local broker's config to BROKER_DIR/mosquitto.conf (the project config, listening on MQTT_URL's "
        "host and port, persistence and auth files under BROKER_DIR) and, unless MQTT_LISTENER_PASSWORD is set, "
        "create the listener's broker password under var/secrets/. broker_sync then renders the auth files."
    )

    def handle(self, *args, **options):
        address = broker_address()
        if address.tls:
            raise CommandError(f"The local broker serves plain MQTT on loopback; MQTT_URL is {address}.")
        directory = Path(settings.BROKER_DIR)
        data_dir = directory / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        tokens = tokens_path(settings.BROKER_PASSWD_PATH, settings.BROKER_TOKENS_PATH)
        try:
            plugin_path = plugin_build(directory / "plugin")
        except PluginBuildError as error:
            raise CommandError(str(error)) from None
        config = render_broker_config(
            TEMPLATE.read_text(),
            host=address.host,
            port=address.port,
            data_dir=data_dir,
            password_file=settings.BROKER_PASSWD_PATH,
            acl_file=settings.BROKER_ACL_PATH,
            plugin_path=str(plugin_path),
            tokens_file=str(tokens),
            pid_file=settings.BROKER_PID_PATH,
        )
        # The plugin reads its tokens file at start: an empty one until broker_sync renders the real one.
        if not tokens.exists():
            write_atomically(tokens, "")
        changed = write_atomically(directory / "mosquitto.conf", config)
        self.stdout.write(f"Broker config {directory / 'mosquitto.conf'} {'written' if changed else 'unchanged'}.")
        if settings.MQTT_LISTENER_PASSWORD:
            return
        secret_path = Path(settings.LOCAL_SECRETS_DIR) / LISTENER_SECRET
        secret_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # O_EXCL: never overwrite a password the running listener and broker already share.
        try:
            descriptor = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if not secret_path.read_text().strip():
                raise CommandError(f"{secret_path} is empty: delete it and run again.") from None
            self.stdout.write(f"Listener broker password kept ({secret_path}).")
            return
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        self.stdout.write(f"Listener broker password created in {secret_path} (read by every process).")
