"""The pagination of every DRF list (``DEFAULT_PAGINATION_CLASS``)."""

from rest_framework.pagination import LimitOffsetPagination

MAX_PAGE_SIZE = 1000


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """``?limit=&offset=`` with a largest page: without ``max_limit`` DRF passes any limit to the database, and
    ``?limit=99999999999999999999`` overflowed PostgreSQL's bigint (a 500). Larger limits are clamped to the bound;
    an offset past the end answers an empty page without querying it."""

    max_limit = MAX_PAGE_SIZE
