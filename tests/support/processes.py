"""Running the project's own commands as real processes, the way the README and Procfile start them."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

REPO_ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """The test database as ``DATABASE_URL`` for a child process: this process's database host, the test database."""
    settings = connection.settings_dict
    return f"postgres://{settings['HOST'] or ''}/{settings['NAME']}"


def wait_until(predicate, timeout: float = 30, interval: float = 0.1):
    """Poll ``predicate`` until it returns something true (returned) or ``timeout`` passes (its last value)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def manage(*args: str, database_url: str | None = None, timeout: float = 300, **env) -> subprocess.CompletedProcess:
    """Run ``python manage.py <args>`` in a child process; fail loudly with its output if it fails."""
    child_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", **env}
    if database_url:
        child_env["DATABASE_URL"] = database_url
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"manage.py {' '.join(args)} exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )
    return result


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux /proc)."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class ManagedProcess:
    """A long-running ``manage.py`` command (the listener, a worker) started and stopped by a test. ``entry`` is what
    Python runs: a subclass may run an instrumented module (``-m tests.support.<name>``) with the same arguments."""

    entry: tuple[str, ...] = ("manage.py",)

    def __init__(self, *args: str, database_url: str | None = None, **env):
        self.args = args
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "PYTHONUNBUFFERED": "1", **env}
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.process: subprocess.Popen | None = None
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"fw-{os.getpid()}-{id(self)}.log"

    def start(self) -> "ManagedProcess":
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's lifetime
        self.process = subprocess.Popen(
            [sys.executable, *self.entry, *self.args], cwd=REPO_ROOT, env=self.env, stdout=self.log, stderr=self.log
        )
        return self

    def kill(self) -> None:
        """SIGKILL: no chance to flush or acknowledge, as when a machine loses power."""
        self.process.kill()
        self.process.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired as timed_out:
            # Say what it was doing (a process that ignores SIGTERM is a finding, and its log dies with close()), and
            # kill it: left running it would hold the test database and its broker session for the rest of the run.
            # A Fieldwatch command dumps its threads' stacks on SIGUSR1 (faulthandler), and so do the listener's
            # worker processes, which write to the same log: often the one that does not stop.
            for pid in (self.process.pid, *_children(self.process.pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR1)
            time.sleep(1)
            output = self.output()[-16000:]
            self.process.kill()
            self.process.wait(10)
            # Chained, not "from None": when the test failed first (this runs in its finally), its own error stays
            # in the report, above this one.
            raise AssertionError(f"{self.args[0]} did not stop within {timeout} s:\n{output}") from timed_out

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.log_path.unlink(missing_ok=True)
