"""Fixed-window rate limits in the shared cache (Redis), so every web process counts against the same budget.

A limit protects; it must not become the outage. While Redis cannot be reached, a limit lets the request through
(fails open), logs it and counts it in ``fieldwatch_rate_limit_unavailable_total``: HTTP ingest must not depend
on Redis, and the other users (token authentication, password-reset emails) guard against abuse whose cost is
bounded anyway (tokens are 256-bit random; a reset email says nothing to its sender). Login throttling keeps its own
fail-open handling (apps.users.throttling).
"""

import logging
import time
from dataclasses import dataclass

from django.core.cache import cache
from prometheus_client import Counter

from apps.core.versioned import CACHE_ERRORS

logger = logging.getLogger(__name__)

UNAVAILABLE = Counter(
    "fieldwatch_rate_limit_unavailable_total", "Requests let through because the rate-limit store was down", ["scope"]
)


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
    try:
        cache.add(key, 0, timeout=window_seconds + 1)
        count = cache.incr(key)
    except CACHE_ERRORS as error:
        UNAVAILABLE.labels(scope).inc()
        logger.warning("rate limit %s not enforced, its store is unavailable: %s", scope, error)
        return RateDecision(True, 0)
    if count <= limit:
        return RateDecision(True, 0)
    return RateDecision(False, max(1, (window + 1) * window_seconds - now))
