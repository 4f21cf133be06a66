"""Fixed-window rate limits in the shared cache (Redis), so every web process counts against the same budget."""

import time
from dataclasses import dataclass

from django.core.cache import cache


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after: int  # seconds until the window resets; 0 when allowed


def rate_limit_hit(*, scope: str, identity: str, limit: int, window_seconds: int) -> RateDecision:
    """Count one request of ``identity`` in the current window; refuse once ``limit`` is exceeded.

    A fixed window is one INCR per request and never blocks; its worst case (2x the limit across a window
    boundary) is acceptable for protecting ingest from a runaway gateway.
    """
    now = int(time.time())
    window = now // window_seconds
    key = f"ratelimit:{scope}:{identity}:{window}"
    cache.add(key, 0, timeout=window_seconds + 1)
    count = cache.incr(key)
    if count <= limit:
        return RateDecision(True, 0)
    return RateDecision(False, max(1, (window + 1) * window_seconds - now))
