#!/usr/bin/env bash
# MQTT listener role: consumes gateway readings from the broker.
set -o errexit -o nounset -o pipefail

exec python manage.py mqtt_listen
