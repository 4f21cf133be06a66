#!/usr/bin/env bash
# Worker role: Celery worker for background tasks.
set -o errexit -o nounset -o pipefail

exec celery -A config worker --loglevel=INFO --concurrency="${CELERY_CONCURRENCY:-2}"
