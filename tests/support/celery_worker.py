"""A real Celery worker of the test's own, as the Procfile starts it, on the queue the test's environment names."""

import subprocess
import sys
from pathlib import Path

from tests.support.processes import REPO_ROOT, wait_until


class CeleryWorker:
    """``celery -A config worker --concurrency 1 -n <name>@%h`` as the Procfile starts it, on the test's queue."""

    def __init__(self, name: str, env: dict, log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self) -> "CeleryWorker":
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's lifetime
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "config", "worker", "--concurrency", "1"),
                *("-n", f"{self.name}@%h", "-Q", self.env["CELERY_TASK_DEFAULT_QUEUE"], "-l", "info"),
                *("--without-gossip", "--without-mingle"),
            ],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        return self

    def wait_ready(self) -> None:
        if not wait_until(lambda: "ready." in self.output() or self.process.poll() is not None, timeout=60):
            raise AssertionError(f"worker {self.name} did not start:\n{self.output()}")
        if self.process.poll() is not None:
            raise AssertionError(f"worker {self.name} exited {self.process.returncode}:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # warm shutdown: finishes the task at hand
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()
