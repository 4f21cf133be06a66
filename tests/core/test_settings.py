import secrets

import pytest
from cryptography.fernet import Fernet

from tests.support.processes import manage

SECRET_KEYS = Fernet.generate_key().decode()


def test_production_settings_pass_the_deploy_check():
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        "--settings=config.settings.production",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="fieldwatch.example.com",
        FIELDWATCH_SECRET_KEYS=SECRET_KEYS,
    )
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_keys_for_stored_secrets(monkeypatch):
    monkeypatch.delenv("FIELDWATCH_SECRET_KEYS", raising=False)
    with pytest.raises(AssertionError, match="FIELDWATCH_SECRET_KEYS is required in production"):
        manage(
            "check",
            "--settings=config.settings.production",
            DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
            DJANGO_ALLOWED_HOSTS="fieldwatch.example.com",
        )


def test_production_refuses_to_start_without_a_secret_key(monkeypatch):
    monkeypatch.delenv("DJANGO_SECRET_KEY", raising=False)
    with pytest.raises(AssertionError, match="Set the environment variable DJANGO_SECRET_KEY"):
        manage(
            "check",
            "--settings=config.settings.production",
            DJANGO_ALLOWED_HOSTS="fieldwatch.example.com",
            FIELDWATCH_SECRET_KEYS=SECRET_KEYS,
        )


def test_secret_key_can_come_from_a_file(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(secrets.token_urlsafe(50) + "\n")
    manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        "--settings=config.settings.production",
        DJANGO_SECRET_KEY_FILE=str(secret_file),
        DJANGO_ALLOWED_HOSTS="fieldwatch.example.com",
        FIELDWATCH_SECRET_KEYS=SECRET_KEYS,
    )
