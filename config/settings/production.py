"""Production: every secret from the environment, no defaults for them; HTTPS only."""

from django.core.exceptions import ImproperlyConfigured

from config.env import env, env_bool, env_int, env_list
from config.settings.base import *  # noqa: F403

DEBUG = False
SECRET_KEY = env("DJANGO_SECRET_KEY")
FIELDWATCH_SECRET_KEYS = env_list("FIELDWATCH_SECRET_KEYS", [])
if not any(key.strip() for key in FIELDWATCH_SECRET_KEYS):
    raise ImproperlyConfigured("FIELDWATCH_SECRET_KEYS is required in production (Fernet keys, comma-separated).")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [])

# Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
# /healthz is probed over plain HTTP by the container runtime from inside the container.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 60 * 60 * 24 * 365)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
# Everyone who can configure the platform logs in with a second factor (apps/users/two_factor.py).
FIELDWATCH_REQUIRE_ADMIN_2FA = env_bool("FIELDWATCH_REQUIRE_ADMIN_2FA", True)
