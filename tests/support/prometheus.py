"""Reading a process's Prometheus endpoint (the listener's ``--metrics-port``) the way a scraper does."""

import urllib.request


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def metric_sum(port: int, name: str) -> float:
    """The sum of every sample of ``name`` over all its labels (0 when the process has none yet)."""
    total = 0.0
    for line in scrape(port).splitlines():
        if line.startswith((name + " ", name + "{")):
            total += float(line.rsplit(None, 1)[-1])
    return total
