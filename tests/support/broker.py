"""A Mosquitto of the test's own, started from the project's broker config (docker/mosquitto/mosquitto.conf).

The machine's broker on 1883 runs Debian's defaults (a QoS 1 queue of 1000 messages per client, 20 in flight);
the platform's guarantees depend on our config, so end-to-end tests run against that config on a free port.
"""

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.ports import free_port, wait_for_port
from tests.support.processes import REPO_ROOT

PROJECT_CONFIG = REPO_ROOT / "docker" / "mosquitto" / "mosquitto.conf"


class Broker:
    """A mosquitto process with the project config; ``stop()``/``start()`` keep its port and persistence."""

    def __init__(self, auth_dir: Path | None = None):
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="fw-mosquitto-"))
        # Started as root, mosquitto drops to its own user, which must still write its persistence file.
        self.directory.chmod(0o777)
        config = PROJECT_CONFIG.read_text()
        config = re.sub(r"(?m)^listener \d+.*$", f"listener {self.port} 127.0.0.1", config)
        config = re.sub(r"(?m)^persistence_location .*$", f"persistence_location {self.directory}/", config)
        config = re.sub(r"(?m)^log_dest .*$", f"log_dest file {self.directory}/mosquitto.log", config)
        if auth_dir is not None:
            # Broker auth: password and ACL files in ``auth_dir`` (rendered by broker_sync), no anonymous access.
            config = re.sub(r"(?m)^#?password_file .*$", f"password_file {auth_dir}/passwd", config)
            config = re.sub(r"(?m)^#?acl_file .*$", f"acl_file {auth_dir}/acl", config)
            config = re.sub(r"(?m)^allow_anonymous .*$", "allow_anonymous false", config)
        self.config_path = self.directory / "mosquitto.conf"
        self.config_path.write_text(config)
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
