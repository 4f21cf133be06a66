"""The test-suite: real PostgreSQL and Redis, fast password hashing, Celery eager, in-memory channel layer."""

from config.settings.base import *  # noqa: F403
from config.settings.base import CACHES, STORAGES, env

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
# A key prefix of its own per run, so tests never read a cache entry left by the running platform.
CACHES = {"default": {**CACHES["default"], "KEY_PREFIX": env("CACHE_KEY_PREFIX", "fw-test")}}
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
# Tests never run collectstatic; whitenoise serves from the finders instead of warning about a missing root.
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True
# Failed-login counts live in Redis and every test client comes from 127.0.0.1: a delay from one test must not
# leak into others. The throttling tests set the real bounds themselves.
LOGIN_FREE_FAILURES = 1000
LOGIN_ADDRESS_FAILURE_LIMIT = 100_000
# Tests start their own brokers (tests/support/broker.py) and sync them explicitly: nothing is written under var/
# and no commit in a test reloads a broker of `make run`. The listener's login is fixed, so the listener processes
# a test starts (this settings module too) log in as what the test's broker was given.
BROKER_AUTH_SYNC = False
BROKER_PASSWD_PATH = BROKER_ACL_PATH = BROKER_PID_PATH = ""
MQTT_LISTENER_USERNAME = "fw-test-listener"
MQTT_LISTENER_PASSWORD = "fw-test-listener-password"
DEMO_MQTT_PASSWORDS_PATH = ""
