#!/bin/sh
# The compose stack's broker: run the given command (Mosquitto), and send it SIGHUP whenever the password, ACL or
# access-token file that Fieldwatch's worker renders (manage.py broker_sync) changes, so a new or revoked login takes effect
# within a second or two. The worker runs in another container and cannot signal this one; watching the shared
# files needs no docker socket and no shared pid namespace.
#
#   reloading-broker.sh <command...>      e.g. /docker-entrypoint.sh /usr/sbin/mosquitto -c /mosquitto/config/...
#
# BROKER_AUTH_DIR  the directory shared with the worker (default /fieldwatch/broker-auth)
# FIELDWATCH_UID   the uid the worker runs as, which must be able to write there (default 10001, docker/Dockerfile)
set -eu

auth_dir=${BROKER_AUTH_DIR:-/fieldwatch/broker-auth}
mkdir -p "$auth_dir"
# Root here (the image's entrypoint drops to the mosquitto user later): hand the directory to the worker. Mosquitto
# only reads the files, which the worker writes world-readable (they hold hashes of random secrets only).
if [ "$(id -u)" = 0 ]; then
  chown "${FIELDWATCH_UID:-10001}" "$auth_dir"
fi
# Before the worker's first sync: empty files, so the broker starts and admits nobody.
[ -e "$auth_dir/passwd" ] || : > "$auth_dir/passwd"
[ -e "$auth_dir/acl" ] || : > "$auth_dir/acl"
[ -e "$auth_dir/tokens" ] || : > "$auth_dir/tokens"

"$@" &
broker=$!
trap 'kill -TERM "$broker" 2>/dev/null' TERM INT

fingerprint() { cat "$auth_dir/passwd" "$auth_dir/acl" "$auth_dir/tokens" 2>/dev/null | cksum; }
last=$(fingerprint)
# The worker replaces each file by a rename, so a read sees a whole old or a whole new file, never half of one.
while kill -0 "$broker" 2>/dev/null; do
  sleep 1
  now=$(fingerprint)
  if [ "$now" != "$last" ]; then
    last=$now
    kill -HUP "$broker" 2>/dev/null || true
  fi
done
wait "$broker"
