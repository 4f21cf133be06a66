#!/usr/bin/env bash
# Worker role: Celery worker for background tasks.
set -o errexit -o nounset -o pipefail

# Render the broker's logins before taking tasks, so the broker admits the listener and the fleet at once instead
# of at the first credential change or beat run. Only where this container has the files (compose: broker-auth).
if [ -n "${BROKER_PASSWD_PATH:-}" ] && [ -d "$(dirname "$BROKER_PASSWD_PATH")" ]; then
    python manage.py broker_sync
fi

exec celery -A config worker --loglevel=INFO --concurrency="${CELERY_CONCURRENCY:-2}"
