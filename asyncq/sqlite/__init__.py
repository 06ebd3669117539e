"""The embedded ``sqlite://`` broker: durable, shared by the processes of one host, no
server; the default when an App names no broker. See :mod:`asyncq.sqlite.backend`."""

from .backend import SqliteBackend
from .settings import DEFAULT_URL, SqliteSettings

__all__ = ["DEFAULT_URL", "SqliteBackend", "SqliteSettings"]
