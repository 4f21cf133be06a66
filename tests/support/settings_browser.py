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

# Broker: the test's own (tests/support/broker.py), logged in to as the test settings' listener; no commit of the
# web process syncs a broker.
from config.settings import test as _test  # noqa: E402

BROKER_AUTH_SYNC = _test.BROKER_AUTH_SYNC
BROKER_PASSWD_PATH, BROKER_ACL_PATH, BROKER_PID_PATH = (
    _test.BROKER_PASSWD_PATH,
    _test.BROKER_ACL_PATH,
    _test.BROKER_PID_PATH,
)
MQTT_LISTENER_USERNAME, MQTT_LISTENER_PASSWORD = _test.MQTT_LISTENER_USERNAME, _test.MQTT_LISTENER_PASSWORD
DEMO_MQTT_PASSWORDS_PATH = _test.DEMO_MQTT_PASSWORDS_PATH
