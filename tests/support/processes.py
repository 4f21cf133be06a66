"""Running the project's own commands as real processes, the way the README and Procfile start them."""

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


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
