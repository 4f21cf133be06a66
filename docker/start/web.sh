#!/usr/bin/env bash
# Web role: apply migrations, then serve the ASGI app with uvicorn.
# Static files were collected at image build time.
set -o errexit -o nounset -o pipefail

python manage.py migrate --noinput
python manage.py install_schedules

exec uvicorn config.asgi:application \
    --host 0.0.0.0 \
    --port 8000 \
    --workers "${WEB_CONCURRENCY:-2}" \
    --proxy-headers
