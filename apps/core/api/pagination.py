"""The pagination of every DRF list: limit/offset by default (``DEFAULT_PAGINATION_CLASS``), cursors for lists that
grow with the fleet (the registry's)."""

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination, LimitOffsetPagination

MAX_PAGE_SIZE = 1000
_MAX_DIGITS = 20  # more digits than any page size or offset; int() of a 5,000-digit string is not free


def _count(request, name: str, minimum: int) -> int | None:
    """Query parameter ``name`` as a count of at least ``minimum``, None when not given; a 400 for anything else."""
    text = request.query_params.get(name)
    if not text:  # absent, or empty as every optional query parameter may be (as DRF's fields read them)
        return None
    if not (text.isdigit() and len(text) <= _MAX_DIGITS and int(text) >= minimum):
        raise ValidationError({name: [f"{text[:_MAX_DIGITS]!r} is not a whole number of at least {minimum}."]})
    return int(text)


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """``?limit=&offset=`` with a largest page and a 400 for what is not a count.

    Without ``max_limit`` DRF passes any limit to the database: ``?limit=99999999999999999999`` overflowed
    PostgreSQL's bigint (a 500). A larger limit is clamped to ``MAX_PAGE_SIZE``; an offset past the end answers an
    empty page without querying it. DRF silently replaces an unreadable limit (``?limit=ten``) with the default; a
    stranger's typo deserves a reason instead, so it is a 400 naming the parameter.
    """

    max_limit = MAX_PAGE_SIZE

    def get_limit(self, request):
        limit = _count(request, self.limit_query_param, 1)
        return self.default_limit if limit is None else min(limit, self.max_limit)

    def get_offset(self, request):
        return _count(request, self.offset_query_param, 0) or 0

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.limit_query_param:
                parameter["schema"]["minimum"] = 1
                parameter["description"] = f"Results per page, at most {MAX_PAGE_SIZE} (a larger limit is clamped)."
            elif parameter["name"] == self.offset_query_param:
                parameter["schema"]["minimum"] = 0
        return parameters


class BoundedCursorPagination(CursorPagination):
    """``?cursor=&limit=`` over a stable ordering: pages that neither skip nor repeat rows while the fleet changes,
    and whose cost does not grow with the page number (no OFFSET). The view sets ``ordering`` to a unique field.

    A cursor that is not one of ours answers 400 naming the parameter (DRF answers 404, which reads as "no such
    list"); a limit is read as ``BoundedLimitOffsetPagination`` reads it.
    """

    page_size_query_param = "limit"
    max_page_size = MAX_PAGE_SIZE

    def get_page_size(self, request):
        limit = _count(request, self.page_size_query_param, 1)
        return self.page_size if limit is None else min(limit, self.max_page_size)

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ValidationError(
                {self.cursor_query_param: ["Not a cursor of this list: use a `next` link."]}
            ) from None

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"]["minimum"] = 1
                parameter["description"] = f"Results per page, at most {MAX_PAGE_SIZE} (a larger limit is clamped)."
        return parameters
