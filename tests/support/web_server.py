"""A real web server of the test's own: ``uvicorn config.asgi:application`` on a free port, as the Procfile runs it,
with the environment the test gives it (settings module, DATABASE_URL, REDIS_URL, key prefixes)."""

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.support.ports import free_port, wait_for_port
from tests.support.processes import REPO_ROOT


class WebServer:
    """``uvicorn config.asgi:application`` on a free port; ``restart()`` keeps the port (a deploy, a crash)."""

    def __init__(self, env: dict):
        self.port = free_port()
        self.env = env
        self.process: subprocess.Popen | None = None
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"fw-uvicorn-{os.getpid()}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's lifetime
        command = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--log-level", "warning", "--no-access-log"]
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )
        try:
            wait_for_port(self.port, timeout=30)
        except RuntimeError as error:
            raise AssertionError(f"uvicorn did not start:\n{self.output()}") from error

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def restart(self, pause: float = 0.0) -> None:
        self.stop()
        time.sleep(pause)
        self.start()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        self.stop()
        if not os.environ.get("FW_KEEP_LOGS"):
            self.log_path.unlink(missing_ok=True)
