"""What every app's REST API shares: request parsing, pagination, fields, authentication challenges and the OpenAPI
document's error responses (wired in ``REST_FRAMEWORK`` and ``SPECTACULAR_SETTINGS``)."""
