"""Development on one machine: debug on, static files served from the source tree."""

from config.settings.base import *  # noqa: F403
from config.settings.base import STORAGES

DEBUG = True
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
