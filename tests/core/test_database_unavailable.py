"""A request that fails because the database cannot be reached is a 503 with Retry-After, not a 500 (handler500,
apps/core/views.py). The end-to-end drill on a stopped PostgreSQL is tests/drills/test_postgres_restart_http_ingest.py;
these cover the page branch and that other errors stay 500."""

import json

from django.db import InterfaceError, OperationalError
from django.test import RequestFactory

from apps.core.views import DATABASE_RETRY_AFTER_SECONDS, server_error


def answer_while_handling(error: Exception, path: str):
    try:
        raise error
    except (OperationalError, InterfaceError, ValueError):
        return server_error(RequestFactory().get(path))


def test_a_page_answers_503_in_plain_text_with_retry_after():
    response = answer_while_handling(OperationalError("connection refused"), "/sites/")
    assert response.status_code == 503
    assert response["Retry-After"] == str(DATABASE_RETRY_AFTER_SECONDS)
    assert response["Content-Type"].startswith("text/plain")
    assert b"database is unavailable" in response.content


def test_an_api_path_answers_503_in_json_with_a_reason():
    response = answer_while_handling(InterfaceError("connection already closed"), "/api/v1/alerts")
    assert response.status_code == 503
    assert response["Retry-After"] == str(DATABASE_RETRY_AFTER_SECONDS)
    assert json.loads(response.content)["reason"] == "database_unavailable"


def test_any_other_error_stays_a_500():
    response = answer_while_handling(ValueError("a bug"), "/api/v1/alerts")
    assert response.status_code == 500
    assert "Retry-After" not in response
