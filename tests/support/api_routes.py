"""Every route and method of the versioned API (config/api_router.py), found by walking the URL resolver, for the
tests that must cover each one (the permission matrix, token scopes)."""

from django.urls import URLPattern, URLResolver, get_resolver


def _methods(callback) -> set[str]:
    if getattr(callback, "actions", None):  # a viewset route: {method: action}
        return {method.upper() for method in callback.actions if method not in ("options", "head")}
    cls = callback.cls
    return {m.upper() for m in cls.http_method_names if m not in ("options", "head", "trace") and hasattr(cls, m)}


def api_route_patterns() -> dict[str, URLPattern]:
    """Route name -> its pattern, for every named route of the ``api`` namespace (the first of a name: a router
    adds a ``.<format>`` variant after it)."""
    found = {}

    def walk(patterns, namespace):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, pattern.namespace or namespace)
            elif isinstance(pattern, URLPattern) and namespace == "api":
                assert pattern.name, f"unnamed API route {pattern.pattern}"
                found.setdefault(pattern.name, pattern)

    walk(get_resolver().url_patterns, None)
    return found


def api_routes() -> set[tuple[str, str]]:
    """(route name, method) of every API endpoint."""
    return {(name, method) for name, pattern in api_route_patterns().items() for method in _methods(pattern.callback)}
