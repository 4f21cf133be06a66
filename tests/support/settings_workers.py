"""Settings for Celery workers started by end-to-end tests: local settings plus what the test points elsewhere.

Until config/settings/base.py reads these from the environment itself, this module does, so a test can aim a real
worker at its own SMTP server and a private Celery queue.
"""

from config.env import env, env_int
from config.settings.local import *  # noqa: F403
from config.settings.local import CACHES

EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "127.0.0.1")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "Fieldwatch <alerts@fieldwatch.localhost>")
FIELDWATCH_BASE_URL = env("FIELDWATCH_BASE_URL", "http://127.0.0.1:8000")
ALERT_DELIVERY_MAX_ATTEMPTS = env_int("ALERT_DELIVERY_MAX_ATTEMPTS", 5)
# A queue of the test's own, so a platform worker on the same Redis never takes the test's tasks.
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_TASK_DEFAULT_QUEUE", "celery")
CACHES = {"default": {**CACHES["default"], "KEY_PREFIX": env("CACHE_KEY_PREFIX", "fw-test")}}
