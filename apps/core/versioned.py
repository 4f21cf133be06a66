"""In-process snapshots of database state, refreshed when a version number in the shared cache changes.

The hot paths (ingest validation, alert evaluation) must not query per message, yet must notice an admin's change
within seconds in every process. Writers bump a version key in Redis on commit (``VersionKey.bump``, from signals);
each process checks the key at most once per ``check_interval`` and reloads its snapshot when it moved, and reloads
every ``max_age`` regardless, which also catches a bump lost while Redis was away or a bulk ``update()`` that sent
no signal.
"""

import abc
import logging
import time
from collections.abc import Callable

from django.core.cache import cache
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# What an unreachable or failing Redis raises through Django's RedisCache.
CACHE_ERRORS = (RedisError, OSError)


class VersionKey:
    """A counter in the shared cache that says "the data behind the snapshots changed"."""

    def __init__(self, key: str, what: str):
        self.key = key
        self.what = what

    def bump(self) -> None:
        """Never raises: a cache outage must not turn a save into an error (``max_age`` catches up later)."""
        try:
            try:
                cache.incr(self.key)
            except ValueError:  # missing (first change, or evicted): start from a value no process can have loaded
                if not cache.add(self.key, time.time_ns(), timeout=None):
                    cache.incr(self.key)  # another process added it in between
        except CACHE_ERRORS:
            logger.warning(
                "Could not bump the %s version; processes pick the change up later", self.what, exc_info=True
            )

    def read(self) -> int | None:
        """The current version, None when unset. Raises when the cache is unreachable."""
        return cache.get(self.key)


class VersionedSnapshot(abc.ABC):
    """Holds what ``_load()`` builds; subclasses read it through methods that call ``refresh_if_stale`` first."""

    version_key: VersionKey

    def __init__(
        self, *, check_interval: float = 1.0, max_age: float = 300.0, clock: Callable[[], float] | None = None
    ):
        self.check_interval = check_interval
        self.max_age = max_age
        self._clock = clock or time.monotonic
        self._version: int | None = None
        self._loaded_at: float | None = None
        self._checked_at = 0.0

    @abc.abstractmethod
    def _load(self) -> str:
        """Replace the held state from the database; return a short description for the log."""

    def refresh_if_stale(self) -> bool:
        """Reload if the version changed (checked at most every ``check_interval`` s); True if reloaded.

        Cheap enough to call per message: between checks it is one clock read.
        """
        now = self._clock()
        if self._loaded_at is None or now - self._loaded_at >= self.max_age:
            self.load()
            return True
        if now - self._checked_at < self.check_interval:
            return False
        self._checked_at = now
        try:
            version = self.version_key.read()
        except CACHE_ERRORS:
            logger.warning(
                "Could not read the %s version; keeping the loaded one", self.version_key.what, exc_info=True
            )
            return False
        if version == self._version:
            return False
        self.load()
        return True

    def load(self) -> None:
        # The version is read *before* the rows: a change committed after this read bumps it again, so the worst
        # case is one needless reload, never a missed change.
        try:
            version = self.version_key.read()
        except CACHE_ERRORS:
            logger.warning("Could not read the %s version; loading anyway", self.version_key.what, exc_info=True)
            version = None
        started = time.monotonic()
        description = self._load()
        self._version = version
        self._loaded_at = self._checked_at = self._clock()
        logger.info(
            "Loaded the %s: %s (version %s) in %.0f ms",
            self.version_key.what,
            description,
            version,
            (time.monotonic() - started) * 1000,
        )
