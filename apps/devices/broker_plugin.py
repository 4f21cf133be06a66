"""Building the broker's ThingsBoard plugin (docker/mosquitto/plugin/fieldwatch_thingsboard.c) where it runs.

A Mosquitto plugin is a shared object built against the broker's own headers, so it is compiled on the machine
(or in the image) that runs the broker: ``manage.py broker_setup`` for `make run`, the tests' brokers for the test
run, the broker's Dockerfile for compose. Needs a C compiler and the Debian packages ``mosquitto-dev``,
``libmosquitto-dev`` and ``libssl-dev`` (``make`` installs them).
"""

import hashlib
import shutil
import subprocess
from pathlib import Path

from django.conf import settings

SOURCE = Path(settings.BASE_DIR) / "docker" / "mosquitto" / "plugin" / "fieldwatch_thingsboard.c"
LIBRARY_NAME = "fieldwatch_thingsboard"


class PluginBuildError(RuntimeError):
    pass


def plugin_build(directory: Path) -> Path:
    """The plugin built into ``directory``, compiled only when the source changed since the last build (the file
    name carries the source's digest, so a broker never loads a stale build)."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    target = Path(directory) / f"{LIBRARY_NAME}-{digest}.so"
    if target.exists():
        return target
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise PluginBuildError("no C compiler (cc) to build the broker plugin; install build-essential")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".so.partial")
    command = [compiler, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(partial), str(SOURCE)]
    result = subprocess.run([*command, "-lcrypto"], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise PluginBuildError(
            "building the broker plugin failed (are mosquitto-dev, libmosquitto-dev and libssl-dev installed?):\n"
            + result.stderr[-2000:]
        )
    partial.replace(target)  # atomic: a broker starting meanwhile sees the whole file or none
    return target
