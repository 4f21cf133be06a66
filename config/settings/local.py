"""Development on one machine: debug on (``DJANGO_DEBUG=0`` turns it off), static files served from the source tree."""

from config.env import env_bool
from config.settings.base import *  # noqa: F403
from config.settings.base import STORAGES

DEBUG = env_bool("DJANGO_DEBUG", True)
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
