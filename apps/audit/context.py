"""The request (or job) an audit record belongs to, without thread-locals.

Signal receivers (configuration changes saved by the admin, a DRF view or a form) get no request argument, yet an
audit event must say who and from where. ``AuditContextMiddleware`` puts the current request into a
``contextvars.ContextVar`` for the duration of the view and resets it afterwards. A ContextVar, unlike a
thread-local, is also correct under ASGI: each request runs in its own context (asyncio tasks copy it, and
asgiref's ``sync_to_async`` / ``async_to_sync`` carry it across to the thread that runs sync code), so two
concurrent requests served by one thread or one event loop never see each other's request, and nothing leaks into
the next request because the token is reset in ``finally``.

Jobs without a request name their actor with ``audit_actor("beat")``.
"""

import contextlib
from contextvars import ContextVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

_current_request: ContextVar = ContextVar("audit_current_request", default=None)
_current_actor: ContextVar = ContextVar("audit_current_actor", default=None)


def current_request():
    return _current_request.get()


def current_actor():
    """An explicit actor set by ``audit_actor`` (a user or a marker string), else None."""
    return _current_actor.get()


@contextlib.contextmanager
def audit_actor(actor):
    """Attribute audit records made inside the block to ``actor`` (a user, or a marker such as ``"beat"``)."""
    token = _current_actor.set(actor)
    try:
        yield
    finally:
        _current_actor.reset(token)


class AuditContextMiddleware:
    """Expose the current request to audit recording (see the module docstring). Sync and async capable."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        token = _current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _current_request.reset(token)

    async def __acall__(self, request):
        token = _current_request.set(request)
        try:
            return await self.get_response(request)
        finally:
            _current_request.reset(token)
