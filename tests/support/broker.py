"""A Mosquitto of the test's own, started from the project's broker config (docker/mosquitto/mosquitto.conf).

The machine's broker on 1883 runs Debian's defaults (anonymous access, a QoS 1 queue of 1000 messages per client,
20 in flight); the platform's guarantees depend on our config, so end-to-end tests run against that config on a
free port, with authentication on as in production. Its logins are the listener's (test settings) and whatever
``sync()`` renders from the test database, exactly as ``manage.py broker_sync`` renders them.
"""

import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.test import override_settings

from apps.devices.broker_auth import (
    broker_auth_sync,
    mosquitto_password_hash,
    render_acl_file,
    render_broker_config,
    render_password_file,
    render_tokens_file,
    write_atomically,
)
from apps.devices.broker_plugin import plugin_build
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import REPO_ROOT, manage

PROJECT_CONFIG = REPO_ROOT / "docker" / "mosquitto" / "mosquitto.conf"
# One build of the broker plugin for every test broker of the machine (named by its source digest).
PLUGIN_DIR = Path(tempfile.gettempdir()) / "fieldwatch-broker-plugin"


class Broker:
    """A mosquitto process with the project config; ``stop()``/``start()`` keep its port, persistence and logins.

    ``prefix``: the topic prefix the logins are rendered for until ``sync()`` is given another (default: the
    setting). ``load_generators`` (username -> password) may publish to every topic: benchmarks drive thousands of
    devices from one connection, to measure the broker and the listener rather than CONNECTs. Tests log in as real
    devices and gateways instead (``tests.support.mqtt.broker_logins``).
    """

    def __init__(self, *, prefix: str | None = None, load_generators: dict[str, str] | None = None):
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="fw-mosquitto-"))
        self.password_file = self.directory / "passwd"
        self.acl_file = self.directory / "acl"
        self.pid_file = self.directory / "mosquitto.pid"
        self.log_file = self.directory / "mosquitto.log"
        self.tokens_file = self.directory / "tokens"
        self.load_generators = load_generators or {}
        self.prefix = prefix or settings.MQTT_TOPIC_PREFIX
        config = render_broker_config(
            PROJECT_CONFIG.read_text(),
            host="127.0.0.1",
            port=self.port,
            data_dir=self.directory,
            password_file=str(self.password_file),
            acl_file=str(self.acl_file),
            plugin_path=str(plugin_build(PLUGIN_DIR)),
            tokens_file=str(self.tokens_file),
            topic_prefix=self.prefix,  # ThingsBoard topics are rewritten under the broker's own prefix
            pid_file=str(self.pid_file),
            log_file=str(self.log_file),
        )
        self.config_path = self.directory / "mosquitto.conf"
        self.config_path.write_text(config)
        # Until the first sync: the platform's own logins only (no database needed, module-scoped fixtures have none).
        with override_settings(MQTT_TOPIC_PREFIX=self.prefix):
            write_atomically(self.acl_file, render_acl_file([]))
            write_atomically(self.password_file, render_password_file([]))
            write_atomically(self.tokens_file, render_tokens_file([]))
        self._add_load_generators()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.config_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def sync(self, prefix: str | None = None, *, database_url: str | None = None) -> None:
        """Render the database's logins for topics under ``prefix`` (default: the broker's) and reload the broker,
        returning once it has re-read its files. The test database, or ``database_url``'s through ``broker_sync``."""
        prefix = prefix or self.prefix
        reloads = self._reloads()
        paths = {
            "password_file": str(self.password_file),
            "acl_file": str(self.acl_file),
            "tokens_file": str(self.tokens_file),
        }
        if database_url:
            args = [f"--{name.replace('_', '-')}={path}" for name, path in paths.items()]
            manage("broker_sync", *args, database_url=database_url, MQTT_TOPIC_PREFIX=prefix)
        else:
            with override_settings(MQTT_TOPIC_PREFIX=prefix):
                broker_auth_sync(**paths)
        self._add_load_generators()
        self.reload(after=reloads)

    def reload(self, *, after: int | None = None) -> None:
        """SIGHUP, as broker_sync sends it; wait until the broker logged one more reload than ``after``."""
        after = self._reloads() if after is None else after
        if self.process is None:
            return
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while self._reloads() <= after:
            assert time.monotonic() < deadline, f"the broker did not reload:\n{self.log_file.read_text()[-2000:]}"
            time.sleep(0.02)

    def _reloads(self) -> int:
        return self.log_file.read_text().count("Reloading config") if self.log_file.exists() else 0

    def _add_load_generators(self) -> None:
        if not self.load_generators:
            return
        passwords = "".join(f"{name}:{mosquitto_password_hash(pw)}\n" for name, pw in self.load_generators.items())
        acl = "".join(f"\nuser {name}\ntopic write #\n" for name in self.load_generators)
        self.acl_file.write_text(re.sub(r"\n*\Z", "\n", self.acl_file.read_text()) + acl)
        self.password_file.write_text(self.password_file.read_text() + passwords)
