"""The Celery application shared by workers and beat. Periodic jobs are rows in django-celery-beat's tables."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("fieldwatch")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
