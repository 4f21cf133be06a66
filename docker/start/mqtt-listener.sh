#!/usr/bin/env bash
# MQTT listener role: consumes gateway readings from the broker.
set -o errexit -o nounset -o pipefail

# Metrics on loopback only: the container's healthcheck reads them (docker/healthcheck.py listener).
exec python manage.py mqtt_listen --metrics-port "${LISTENER_METRICS_PORT:-9108}"
