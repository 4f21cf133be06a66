#!/usr/bin/env bash
# Beat role: Celery beat with schedules stored in the database
# (django_celery_beat). Run exactly one beat per deployment.
set -o errexit -o nounset -o pipefail

exec celery -A config beat --loglevel=INFO --scheduler django_celery_beat.schedulers:DatabaseScheduler
