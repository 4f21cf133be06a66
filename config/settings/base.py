"""Settings shared by every environment. Values come from the environment (see ``config.env``)."""

import os
import tempfile
from pathlib import Path

import dj_database_url

from config.env import development_fernet_key, env, env_bool, env_int, env_list, env_secret

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# ---------------------------------------------------------------------------------------------------------------------
# Core
# ---------------------------------------------------------------------------------------------------------------------
SECRET_KEY = env("DJANGO_SECRET_KEY", "local-development-only-not-secret")
# Fernet keys for secrets stored encrypted (apps/core/encryption.py): the first encrypts, any decrypts. Locally a key
# derived from SECRET_KEY; production requires the variable.
FIELDWATCH_SECRET_KEYS = env_list("FIELDWATCH_SECRET_KEYS", [development_fernet_key(SECRET_KEY)])
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "waffle",
    "guardian",
    "django_celery_beat",
    # Before apps.users, whose admin replaces otp_totp's device admin (that one can show secrets).
    "django_otp",
    "django_otp.plugins.otp_totp",
    "apps.core",
    "apps.users",
    "apps.devices",
    "apps.telemetry",
    "apps.alerts",
    "apps.audit",
    "apps.dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): the session's second factor; then the pages a pending session may not see.
    "django_otp.middleware.OTPMiddleware",
    "apps.users.two_factor.TwoFactorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "apps.core.security.SecurityHeadersMiddleware",
    "apps.core.audit.AuditContextMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# ---------------------------------------------------------------------------------------------------------------------
# Database: PostgreSQL only. The engine is a thin subclass of django-timescaledb's backend that detects whether the
# timescaledb extension is available and degrades to plain PostgreSQL when it is not (apps/core/db/backend).
# ---------------------------------------------------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", "postgres:///fieldwatch"),
        engine="apps.core.db.backend",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
# A connection attempt gives up after this many seconds (unless the URL sets ``connect_timeout``): without it, an
# endpoint that takes the TCP connection and never answers (a black-holing firewall; a loopback port that connected
# to itself while the server was down) holds the caller for good: an ingest worker retrying its flush could not
# stop. The listener's retry loop takes it from there.
DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 10))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ---------------------------------------------------------------------------------------------------------------------
# Users and permissions
# ---------------------------------------------------------------------------------------------------------------------
AUTH_USER_MODEL = "users.User"
AUTHENTICATION_BACKENDS = [
    # ModelBackend plus login throttling (apps/users/throttling.py): refuses while a (username, address) pair or an
    # address is throttled.
    "apps.users.throttling.ThrottledModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
# Guardian's anonymous user would be a row in every tenant-scoped query; Fieldwatch has no anonymous access.
ANONYMOUS_USER_NAME = None
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"

# Login throttling (apps/users/throttling.py). Per (username, address): this many failures are free, each further
# one refuses the pair for 1, 2, 4, ... seconds up to the cap; failures are forgotten this long after the last one.
LOGIN_FREE_FAILURES = env_int("LOGIN_FREE_FAILURES", 5)
LOGIN_DELAY_MAX_SECONDS = env_int("LOGIN_DELAY_MAX_SECONDS", 15 * 60)
LOGIN_FAILURE_MEMORY_HOURS = env_int("LOGIN_FAILURE_MEMORY_HOURS", 24)
# Per address alone (many usernames: spraying): this many failures within the window refuse it for the window.
LOGIN_ADDRESS_FAILURE_LIMIT = env_int("LOGIN_ADDRESS_FAILURE_LIMIT", 100)
LOGIN_ADDRESS_WINDOW_MINUTES = env_int("LOGIN_ADDRESS_WINDOW_MINUTES", 60)

# Password reset by email (Django's views): links work this long; at most this many emails to one address an hour.
PASSWORD_RESET_TIMEOUT = env_int("PASSWORD_RESET_TIMEOUT", 60 * 60 * 24)
PASSWORD_RESET_EMAILS_PER_HOUR = env_int("PASSWORD_RESET_EMAILS_PER_HOUR", 3)

# Two-factor authentication (apps/users/two_factor.py): superusers, staff and organization admins must enrol an
# authenticator app and enter its code at every login. On in production; off here so a fresh checkout and the demo
# logins work without a phone (FIELDWATCH_REQUIRE_ADMIN_2FA=1 turns it on anywhere).
FIELDWATCH_REQUIRE_ADMIN_2FA = env_bool("FIELDWATCH_REQUIRE_ADMIN_2FA", False)
OTP_TOTP_ISSUER = env("FIELDWATCH_OTP_ISSUER", "Fieldwatch")  # the account's label in authenticator apps
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

# Feature flags (django-waffle; apps/core/flags.py): waffle's Flag, switched on per organization by the users app's
# FlagOrganization rows, whose admin (apps/users/admin.py) replaces waffle's. A flag nobody created is off.
WAFFLE_FLAG_MODEL = "waffle.Flag"
WAFFLE_ENABLE_ADMIN_PAGES = False
WAFFLE_FLAG_DEFAULT = False
WAFFLE_CREATE_MISSING_FLAGS = False

# ---------------------------------------------------------------------------------------------------------------------
# Audit log and client addresses
# ---------------------------------------------------------------------------------------------------------------------
AUDIT_RETENTION_DAYS = env_int("AUDIT_RETENTION_DAYS", 365)
# Reverse proxies whose X-Forwarded-For is believed (CIDRs); empty: the client IP is REMOTE_ADDR, the header ignored.
TRUSTED_PROXY_NETWORKS = env_list("DJANGO_TRUSTED_PROXY_NETWORKS", [])

# ---------------------------------------------------------------------------------------------------------------------
# Security headers (apps/core/security.py adds CSP and Permissions-Policy; SecurityMiddleware the rest)
# ---------------------------------------------------------------------------------------------------------------------
SECURE_REFERRER_POLICY = "same-origin"
CONTENT_SECURITY_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self' ws: wss:",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
    "base-uri": "'self'",
    "object-src": "'none'",
}
# Path prefix -> directives replaced there. Swagger UI is served from the drf-spectacular-sidecar package (no CDN)
# and started by a script file (SpectacularSwaggerSplitView), so only its inline styles need an exception.
CONTENT_SECURITY_POLICY_PATHS = {
    "/api/docs": {"style-src": "'self' 'unsafe-inline'"},
}
PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()"
)

# ---------------------------------------------------------------------------------------------------------------------
# Internationalisation: store and compute in UTC; sites carry their own timezone for display and daily buckets.
# ---------------------------------------------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# ---------------------------------------------------------------------------------------------------------------------
# Static files, served by whitenoise in every role so one image needs no extra web server.
# ---------------------------------------------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# uPlot comes from the npm registry (`npm ci`, run by `make setup`) and is served from node_modules, never committed.
if (BASE_DIR / "node_modules/uplot/dist").is_dir():
    STATICFILES_DIRS.append(("vendor/uplot", BASE_DIR / "node_modules/uplot/dist"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
MEDIA_ROOT = Path(env("FIELDWATCH_MEDIA_ROOT", str(BASE_DIR / "var" / "media")))

# ---------------------------------------------------------------------------------------------------------------------
# Redis: cache, Celery broker and the Channels layer share one server, on separate key spaces.
# ---------------------------------------------------------------------------------------------------------------------
REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "apps.core.cache.RedisCache",  # Django's, with its Redis client reused
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env("CACHE_KEY_PREFIX", "fw"),
    }
}
# Sessions are written through to PostgreSQL and read from Redis: every authenticated request loads its session, and
# the cache read costs a third of the ORM query (0.29 against 0.85 ms on the 2-core development machine). Django's
# cached_db falls back to the database when Redis is unavailable; apps.users.sessions makes every cache operation
# best effort, so a Redis outage logs nobody out.
SESSION_ENGINE = "apps.users.sessions"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": env("CHANNELS_PREFIX", "fw-asgi")},
    }
}

# ---------------------------------------------------------------------------------------------------------------------
# Celery: Redis broker; periodic jobs live in the database (django-celery-beat) so admins can see and edit them.
# ---------------------------------------------------------------------------------------------------------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# ---------------------------------------------------------------------------------------------------------------------
# Notifications: email through any SMTP server; links in notifications point at FIELDWATCH_BASE_URL.
# ---------------------------------------------------------------------------------------------------------------------
EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "Fieldwatch <fieldwatch@localhost>")
FIELDWATCH_BASE_URL = env("FIELDWATCH_BASE_URL", "http://127.0.0.1:8000")
# Attempts per notification before it is given up (and recorded so); retries back off exponentially.
ALERT_DELIVERY_MAX_ATTEMPTS = env_int("ALERT_DELIVERY_MAX_ATTEMPTS", 5)
# At-least-once alert evaluation (apps/alerts/outbox.py): a flush's evaluation that has not completed this many
# seconds after its commit is retried by the sweep (beat, every 30 s), up to this many failed attempts.
ALERT_EVALUATION_SWEEP_GRACE_SECONDS = env_int("ALERT_EVALUATION_SWEEP_GRACE_SECONDS", 30)
ALERT_EVALUATION_MAX_ATTEMPTS = env_int("ALERT_EVALUATION_MAX_ATTEMPTS", 5)
# Closed (cleared or resolved) alerts are deleted with their history and deliveries this long after they closed;
# the delivery log of any alert is kept for DELIVERY_RETENTION_DAYS.
ALERT_HISTORY_RETENTION_DAYS = env_int("ALERT_HISTORY_RETENTION_DAYS", 365)
DELIVERY_RETENTION_DAYS = env_int("DELIVERY_RETENTION_DAYS", 90)

# ---------------------------------------------------------------------------------------------------------------------
# MQTT and ingest
# ---------------------------------------------------------------------------------------------------------------------
# 1884: `make run` starts the project's own Mosquitto there (Procfile `broker`), never the machine's broker on 1883.
MQTT_URL = env("MQTT_URL", "mqtt://127.0.0.1:1884")
MQTT_TOPIC_PREFIX = env("MQTT_TOPIC_PREFIX", "fieldwatch")
# Empty: one listener with a plain subscription, which Mosquitto persists with the session, so nothing is lost across
# listener or broker restarts. A group name makes listeners split the stream through an MQTT 5 shared subscription,
# which Mosquitto 2.0 does not restore after a broker restart (docs/delivery.md, measured by bench/crash_drill.py).
MQTT_SHARED_GROUP = env("MQTT_SHARED_GROUP", "")
# Empty: fieldwatch-listener-<host>-<FIELDWATCH_LISTENER_INSTANCE, default 0>, stable across restarts.
MQTT_CLIENT_ID = env("MQTT_CLIENT_ID", "")
# Where a listener locks its client id, so a second one on the host under the same id refuses to start.
LISTENER_LOCK_DIR = env("LISTENER_LOCK_DIR", tempfile.gettempdir())

INGEST_MQTT_MAX_BYTES = env_int("INGEST_MQTT_MAX_BYTES", 256 * 1024)
INGEST_HTTP_MAX_BYTES = env_int("INGEST_HTTP_MAX_BYTES", 5 * 1024 * 1024)
INGEST_MAX_RECORDS = env_int("INGEST_MAX_RECORDS", 10_000)
INGEST_HTTP_RATE_PER_MINUTE = env_int("INGEST_HTTP_RATE_PER_MINUTE", 1200)
INGEST_HTTP_MAX_ERRORS = env_int("INGEST_HTTP_MAX_ERRORS", 100)  # errors listed in one response; all are counted
INGEST_FUTURE_TOLERANCE_SECONDS = env_int("INGEST_FUTURE_TOLERANCE_SECONDS", 300)
# A dead letter keeps its payload up to this size; only letters kept whole can be replayed (apps.telemetry.replay).
INGEST_DEAD_LETTER_PAYLOAD_BYTES = env_int("INGEST_DEAD_LETTER_PAYLOAD_BYTES", 4096)
# Unknown devices one flush records under Discovered devices, and registers under the auto-register policy; the
# rest of a flood of new uids is dead-lettered as unknown_device (and recorded by the following flushes).
INGEST_DISCOVERIES_PER_FLUSH = env_int("INGEST_DISCOVERIES_PER_FLUSH", 1000)
INGEST_AUTO_REGISTER_PER_FLUSH = env_int("INGEST_AUTO_REGISTER_PER_FLUSH", 1000)
# Processes behind `mqtt_listen`'s one MQTT session (apps.telemetry.ingest.processes): the machine's cores.
INGEST_PROCESSES = env_int("INGEST_PROCESSES", os.cpu_count() or 1)
# The listener flushes when its batch holds this many messages, readings or payload bytes, or when the oldest
# message has waited this long, whichever comes first.
INGEST_FLUSH_MESSAGES = env_int("INGEST_FLUSH_MESSAGES", 2000)
INGEST_FLUSH_READINGS = env_int("INGEST_FLUSH_READINGS", 50_000)
INGEST_FLUSH_BYTES = env_int("INGEST_FLUSH_BYTES", 8 * 1024 * 1024)
INGEST_FLUSH_MILLISECONDS = env_int("INGEST_FLUSH_MILLISECONDS", 100)
# Payload bytes the listener holds beyond the batch being written; when full it stops reading from the broker
# (backpressure) until the writer catches up. With the flush bounds this caps the listener's memory.
INGEST_BUFFER_BYTES = env_int("INGEST_BUFFER_BYTES", 32 * 1024 * 1024)

# Sparkplug B (docs/sparkplug.md): the Fieldwatch device uid of an edge node's own metrics and of a device behind it,
# as str.format templates of {group_id}, {edge_node_id} and {device_id}. The edge node id is the uid of the gateway
# whose broker login publishes it. A node is asked to rebirth at most once per SPARKPLUG_REBIRTH_INTERVAL_SECONDS.
SPARKPLUG_NODE_UID = env("SPARKPLUG_NODE_UID", "{edge_node_id}")
SPARKPLUG_DEVICE_UID = env("SPARKPLUG_DEVICE_UID", "{edge_node_id}.{device_id}")
SPARKPLUG_REBIRTH_INTERVAL_SECONDS = env_int("SPARKPLUG_REBIRTH_INTERVAL_SECONDS", 5)

# Gateway API keys: older ones are flagged for rotation (admins notified); a replaced key works this many more days.
API_KEY_ROTATE_AFTER_DAYS = env_int("API_KEY_ROTATE_AFTER_DAYS", 90)
API_KEY_ROTATION_GRACE_DAYS = env_int("API_KEY_ROTATION_GRACE_DAYS", 7)
# Broker auth (apps/devices/broker_auth.py): the broker admits only the logins rendered from the database into its
# password and ACL files. They are rendered on every credential change (a receiver enqueues the sync after commit)
# and by a beat job every minute, then the broker reloads: SIGHUP to the pid in BROKER_PID_PATH, or
# BROKER_RELOAD_COMMAND, or (compose) the broker's own container watching the files. The defaults are `make run`'s
# broker under var/mosquitto/ (`manage.py broker_setup` writes its config). Paths, not the ``*_FILE`` secrets.
BROKER_DIR = Path(env("BROKER_DIR", str(BASE_DIR / "var" / "mosquitto")))
BROKER_AUTH_SYNC = env_bool("BROKER_AUTH_SYNC", True)
BROKER_PASSWD_PATH = env("BROKER_PASSWD_PATH", str(BROKER_DIR / "passwd"))
BROKER_ACL_PATH = env("BROKER_ACL_PATH", str(BROKER_DIR / "acl"))
# The ThingsBoard plugin's access-token hashes (docker/mosquitto/plugin), rendered with the two files above; empty:
# a file named "tokens" next to the password file.
BROKER_TOKENS_PATH = env("BROKER_TOKENS_PATH", "")
BROKER_PID_PATH = env("BROKER_PID_PATH", str(BROKER_DIR / "mosquitto.pid"))
BROKER_RELOAD_COMMAND = env("BROKER_RELOAD_COMMAND", "")
# Secrets `make setup` generates on a development machine (mode 0600, git-ignored); deployments set them instead.
LOCAL_SECRETS_DIR = BASE_DIR / "var" / "secrets"
# The listener's own broker login: the only one that may read the ingest topics. Every listener process logs in
# with it (unless MQTT_URL carries other credentials). `manage.py broker_setup` creates the local password.
MQTT_LISTENER_USERNAME = env("MQTT_LISTENER_USERNAME", "fieldwatch-listener")
MQTT_LISTENER_PASSWORD = env_secret("MQTT_LISTENER_PASSWORD", LOCAL_SECRETS_DIR / "mqtt-listener-password")
# An optional monitoring login that may read everything, `#` and `$SYS/#` (e.g. for a broker exporter); none
# unless both are set.
MQTT_MONITOR_USERNAME = env("MQTT_MONITOR_USERNAME", "")
MQTT_MONITOR_PASSWORD = env("MQTT_MONITOR_PASSWORD", "")
# The demo fleet's broker passwords, kept where `seed_demo` issued them so `manage.py simulate` can log in as each
# demo device and gateway (only hashes are in the database). Local development only: "" keeps no such file.
DEMO_MQTT_PASSWORDS_PATH = env("DEMO_MQTT_PASSWORDS_PATH", str(LOCAL_SECRETS_DIR / "demo-mqtt-passwords.json"))

# Who may scrape /metrics (Prometheus): loopback by default; add the monitoring network in production.
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", ["127.0.0.0/8", "::1/128"])

# Raw readings older than this are neither accepted nor kept (the archive job moves them out first).
RAW_RETENTION_DAYS = env_int("RAW_RETENTION_DAYS", 90)

# Retention per resolution in days (None: kept forever); DeviceType.raw_retention_days overrides the raw one.
ROLLUP_RETENTION_DAYS = {
    "1m": env_int("ROLLUP_1M_RETENTION_DAYS", 30),
    "5m": env_int("ROLLUP_5M_RETENTION_DAYS", 365),
    "1h": None,
    "1d": None,
}
# Exports are deleted this long after they finish; queries beyond this many raw rows answer 413.
EXPORT_EXPIRY_DAYS = env_int("EXPORT_EXPIRY_DAYS", 7)
DEAD_LETTER_RETENTION_DAYS = env_int("DEAD_LETTER_RETENTION_DAYS", 30)
QUERY_MAX_RAW_ROWS = env_int("QUERY_MAX_RAW_ROWS", 200_000)
QUERY_MAX_SERIES = 50
QUERY_DEFAULT_MAX_POINTS = 1000
# Energy: gaps between power readings longer than this are not bridged by the trapezoidal rule.
ENERGY_MAX_GAP_SECONDS = env_int("ENERGY_MAX_GAP_SECONDS", 900)
# Derived figures (energy, volume) over longer ranges, or older than raw retention, come from hourly rollups.
DERIVED_RAW_MAX_DAYS = env_int("DERIVED_RAW_MAX_DAYS", 31)
# Where raw days are archived before retention drops them (a path in the default storage).
ARCHIVE_PREFIX = env("ARCHIVE_PREFIX", "archive/readings")

# The readings hypertable's chunk size and the age after which chunks are compressed (TimescaleDB only).
TIMESCALE_CHUNK_INTERVAL = "1 day"
TIMESCALE_COMPRESS_AFTER = env("TIMESCALE_COMPRESS_AFTER", "7 days")

# ---------------------------------------------------------------------------------------------------------------------
# REST API
# ---------------------------------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # The token class first: DRF answers an unauthenticated request with the first class's WWW-Authenticate challenge,
    # and 403 when it has none (sessions have none). A request without "Authorization: Bearer" falls through to the
    # session, so the dashboard's calls authenticate as before.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.users.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Request bodies are JSON only (the dashboard posts to its own views, not here): a form or multipart parser is a
    # second, laxer reading of the same input (a malformed multipart body read as an empty form, and accepted).
    # JSON nested deeper than apps.core.json_bounded.MAX_DEPTH is a 400, not a RecursionError.
    "DEFAULT_PARSER_CLASSES": ["apps.core.api.parsers.BoundedJSONParser"],
    "DEFAULT_THROTTLE_CLASSES": ["apps.users.authentication.ApiTokenRateThrottle"],
    # Token scopes are checked for every view here, not per view (apps/users/permissions.py).
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "apps.users.permissions.TokenScopePermission",
    ],
    "DEFAULT_SCHEMA_CLASS": "apps.core.api.schema.FieldwatchAutoSchema",  # documents the 4xx answers too
    "DEFAULT_PAGINATION_CLASS": "apps.core.api.pagination.BoundedLimitOffsetPagination",  # limit <= 1000
    "PAGE_SIZE": 100,
}
API_TOKEN_RATE_PER_MINUTE = env_int("API_TOKEN_RATE_PER_MINUTE", 600)  # per personal token, all processes together
SPECTACULAR_SETTINGS = {
    "TITLE": "Fieldwatch API",
    "DESCRIPTION": "Telemetry ingest, queries and configuration for fleets of field equipment.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the installed sidecar package: no CDN at runtime, nothing third-party in the repository.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # <segment:...> (apps.core.converters) is any text to a client; a segment no route matches (NUL) is a 404.
    "PATH_CONVERTER_OVERRIDES": {"segment": str},
    # Two models have a "status": each its own enum in the document.
    "ENUM_NAME_OVERRIDES": {
        "DeviceStatusEnum": "apps.devices.choices.DeviceStatus",
        "AlertStatusEnum": "apps.alerts.choices.AlertStatus",
    },
}

# ---------------------------------------------------------------------------------------------------------------------
# Logging: one line per event on stderr; the process manager or container runtime collects it.
# ---------------------------------------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
