"""Settings for the real web server and listener of the browser tests: local settings (DEBUG, static files from the
finders, the Redis pub/sub channel layer) pointed at the test database and the test's own Redis key spaces.

DATABASE_URL, CHANNELS_PREFIX and CACHE_KEY_PREFIX come from the environment the test gives the processes; the
catalogue and rules version keys must be in the same cache key space as the test process, which creates the data.
"""

from config.env import env
from config.settings.local import *  # noqa: F403
from config.settings.local import CACHES

# The test process creates users with the test settings' fast hasher; the server must verify those passwords.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CACHES = {"default": {**CACHES["default"], "KEY_PREFIX": env("CACHE_KEY_PREFIX", "fw-test")}}
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405 - the test database is flushed between tests
