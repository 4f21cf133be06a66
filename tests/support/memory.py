"""Resident memory of a process, read from /proc (Linux), and a sampler that keeps the peak while a test runs.

Imports nothing from Django, so benchmarks can use it too."""

import threading
import time


def rss_bytes(pid: int) -> int:
    """The process's resident set size now (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread; ``peak`` and ``samples`` once stopped."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def peak(self) -> int:
        return max(rss for _, rss in self.samples)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic() - started, rss_bytes(self.pid)))
            except (OSError, RuntimeError):  # the process ended
                return
            self._stop.wait(self.interval)
