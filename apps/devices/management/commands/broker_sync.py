"""``manage.py broker_sync``: render Mosquitto's password and ACL files from the database and reload the broker."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.devices.broker_auth import broker_auth_sync


class Command(BaseCommand):
    help = (
        "Write Mosquitto's password and ACL files from the device and gateway broker credentials, and the broker "
        "plugin's access-token hashes (atomically, only when changed), and make the broker reload them. Defaults "
        "come from the BROKER_* settings."
    )

    def add_arguments(self, parser):
        parser.add_argument("--password-file", default=settings.BROKER_PASSWD_PATH)
        parser.add_argument("--acl-file", default=settings.BROKER_ACL_PATH)
        parser.add_argument("--tokens-file", default=settings.BROKER_TOKENS_PATH)
        reload = parser.add_mutually_exclusive_group()
        reload.add_argument("--reload-pid-file", default=None, help="Send SIGHUP to the pid in this file.")
        reload.add_argument("--reload-command", default=None, help="Or run this (docker kill -s HUP ...).")

    def handle(self, *args, **options):
        if not options["password_file"] or not options["acl_file"]:
            raise CommandError("Give --password-file and --acl-file (or set BROKER_PASSWD_PATH / BROKER_ACL_PATH).")
        pid_file, command = options["reload_pid_file"], options["reload_command"]
        if pid_file is None and command is None:
            pid_file, command = settings.BROKER_PID_PATH, settings.BROKER_RELOAD_COMMAND
        result = broker_auth_sync(
            password_file=options["password_file"],
            acl_file=options["acl_file"],
            tokens_file=options["tokens_file"],
            reload_pid_file=pid_file or "",
            reload_command=command or "",
        )
        state = "written" if result.changed else "unchanged"
        reload_state = "broker reloaded" if result.reloaded else "no reload"
        self.stdout.write(f"{result.credentials} credential(s); files {state}; {reload_state}")
