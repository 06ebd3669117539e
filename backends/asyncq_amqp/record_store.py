"""Where the AMQP backend keeps its job records: the store its ``records=`` URL names.
``redis://`` (or ``rediss://``): :class:`~.records.RecordStore`, hashes and sets under the
backend's prefix; ``postgresql://`` (or ``postgres://``): the PostgreSQL broker's tables in
the URL's ``schema`` (``asyncq_postgres.amqp_records``, with ``asyncq[postgres]``). Both give
the same methods; the backend's modules name either as :data:`JobRecords`."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import urlsplit

from asyncq.errors import ConfigurationError

from .records import RecordStore

if TYPE_CHECKING:
    from asyncq_postgres.amqp_records import PostgresRecords

    JobRecords: TypeAlias = RecordStore | PostgresRecords

__all__ = ["JobRecords", "open_records"]


def open_records(url: str, *, prefix: str, result_ttl: float) -> JobRecords:
    if urlsplit(url).scheme in ("postgresql", "postgres"):
        try:
            from asyncq_postgres.amqp_records import PostgresRecords
        except ImportError as exc:
            raise ConfigurationError(
                f"records={url.split('?')[0]} needs the PostgreSQL backend: "
                f"pip install 'asyncq[postgres]' ({exc})"
            ) from None
        return PostgresRecords(url, result_ttl=result_ttl)
    return RecordStore(url, prefix=prefix, result_ttl=result_ttl)
