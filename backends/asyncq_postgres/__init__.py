"""asyncq's PostgreSQL backend (``postgresql://`` and ``postgres://``), on asyncpg."""

from .backend import PostgresBackend
from .settings import PostgresSettings

__all__ = ["PostgresBackend", "PostgresSettings"]
