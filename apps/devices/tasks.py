"""Celery tasks of the devices app: call one function, nothing else."""

from celery import shared_task


@shared_task(ignore_result=True)
def api_keys_rotation_task():
    """Notify admins of keys due for rotation; revoke keys whose successor's grace period is over."""
    from apps.devices.key_rotation import api_keys_rotation_run

    return api_keys_rotation_run()


@shared_task(ignore_result=True)
def broker_auth_sync_task():
    """Render the broker's password and ACL files and reload it; a no-op with ``BROKER_AUTH_SYNC=false`` (a broker
    whose logins are managed elsewhere)."""
    from django.conf import settings

    from apps.devices.broker_auth import broker_auth_sync

    if not settings.BROKER_AUTH_SYNC:
        return None
    result = broker_auth_sync(
        password_file=settings.BROKER_PASSWD_PATH,
        acl_file=settings.BROKER_ACL_PATH,
        tokens_file=settings.BROKER_TOKENS_PATH,
        reload_pid_file=settings.BROKER_PID_PATH,
        reload_command=settings.BROKER_RELOAD_COMMAND,
    )
    return {"credentials": result.credentials, "changed": result.changed, "reloaded": result.reloaded}
