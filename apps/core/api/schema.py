"""The OpenAPI document's error answers (``DEFAULT_SCHEMA_CLASS``): every operation documents the 4xx it can give.

drf-spectacular documents what a view declares, usually the success only, while DRF itself answers 400 (invalid
input), 401/403 (authentication and permission classes), 404 (an object outside your scope), 415 (a body DRF cannot
parse) and 429 (the token throttle) for any view that has them. Derived here from the view's classes and the
operation's inputs, so the document is the contract clients (and tests/test_api_fuzzing.py) check answers against.
Answers a view documents itself are kept as they are. Optional query parameters are marked ``allowEmptyValue``:
DRF's fields read ``?site=`` as not given, as an HTML form sends an empty field.
"""

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent

ERROR = ResolvedComponent(
    name="Error",
    type=ResolvedComponent.SCHEMA,
    object="Error",
    schema={
        "type": "object",
        "description": "Why the request was refused: `detail`, or one message (or list of messages) per parameter "
        "or field that names what to fix.",
        "properties": {"detail": {"type": "string"}},
        "additionalProperties": True,
    },
)
CHALLENGE = {
    "WWW-Authenticate": {
        "description": "How to authenticate (RFC 9110): `Bearer` for a personal API token, `ApiKey` for a gateway.",
        "required": True,
        "schema": {"type": "string"},
    }
}
RETRY_AFTER = {
    "Retry-After": {"description": "Seconds until a request is accepted again.", "schema": {"type": "string"}}
}


class FieldwatchAutoSchema(AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        registry.register_on_missing(ERROR)
        view = self.view
        parameters = operation.get("parameters", [])
        for parameter in parameters:
            if parameter["in"] == "query" and not parameter.get("required"):
                parameter["allowEmptyValue"] = True
        errors = {}
        if parameters or "requestBody" in operation:
            errors["400"] = ("Invalid input: the body names each parameter or field and what to fix", {})
        if view.authentication_classes:
            errors["401"] = ("Not authenticated (missing, invalid, expired or revoked credentials)", {})
        if view.permission_classes:
            errors["403"] = ("Authenticated, but your role or token may not do this", {})
        if any(parameter["in"] == "path" for parameter in parameters):
            errors["404"] = ("No such object among those you may see", {})
        if "requestBody" in operation and view.parser_classes:
            errors["415"] = ("The body is not JSON (Content-Type: application/json)", {})
        if view.throttle_classes:
            errors["429"] = ("Too many requests with this token; see Retry-After", RETRY_AFTER)
        responses = operation["responses"]
        for code, (description, headers) in errors.items():
            if code not in responses:
                responses[code] = {"description": description, "content": {"application/json": {"schema": ERROR.ref}}}
            if headers:
                responses[code].setdefault("headers", {}).update(headers)
        if "401" in responses:  # every 401 carries its challenge, also where the view documents the 401 itself
            responses["401"].setdefault("headers", {}).update(CHALLENGE)
        return operation
