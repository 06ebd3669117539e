"""The options of a ``sqlite://`` broker URL, parsed once into :class:`SqliteSettings`.

``sqlite:///relative/path.db`` names a file relative to the working directory,
``sqlite:////absolute/path.db`` an absolute one (three slashes, then the path), as in
SQLAlchemy. Options, in the query string:

* ``visibility_timeout`` (seconds, default 30): how long a delivered, unsettled job waits for
  its worker's lease renewal before another worker may take it;
* ``result_ttl`` (seconds, default 86400): how long finished jobs' records and results stay;
* ``dead_ttl`` (seconds) and ``dead_max`` (per queue), default none: the dead letters kept;
* ``synchronous`` (``normal``, the default, or ``full``): ``normal`` survives a crash of any
  process; ``full`` also a power loss or an operating-system crash, at the price of an
  fsync per commit (made on a thread, not on the event loop);
* ``busy_timeout`` (seconds, default 60): how long a write waits for another process's
  write to end before it fails; waits shorter than that are never seen by users;
* ``max_message_size`` (bytes, default none): refuse larger jobs at enqueue.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..backend import parse_url_options, positive_float, positive_int
from ..errors import ConfigurationError

__all__ = ["DEFAULT_URL", "SqliteSettings"]

DEFAULT_URL = "sqlite:///asyncq.db"
"""The broker of an App given no URL and no ``$ASYNCQ_BROKER``: a file in the working
directory."""

SYNCHRONOUS = ("normal", "full")


def _synchronous(raw: str) -> str:
    value = raw.lower()
    if value not in SYNCHRONOUS:
        raise ValueError(f"must be one of {', '.join(SYNCHRONOUS)}")
    return value


@dataclass(frozen=True, slots=True)
class SqliteSettings:
    path: Path
    """The database file, absolute (resolved against the working directory at start)."""
    visibility_timeout: float = 30.0
    result_ttl: float = 86400.0
    dead_ttl: float | None = None
    dead_max: int | None = None
    synchronous: str = "normal"
    busy_timeout: float = 60.0
    max_message_size: int | None = None

    @classmethod
    def from_url(cls, url: str) -> SqliteSettings:
        parts = urlsplit(url)
        if parts.netloc:
            raise ConfigurationError(
                f"sqlite URL {url!r} names a host ({parts.netloc!r}): a file is named after "
                "three slashes, 'sqlite:///relative.db' or 'sqlite:////absolute/path.db'"
            )
        raw = unquote(parts.path)
        if raw in ("", "/"):
            raise ConfigurationError(
                f"sqlite URL {url!r} names no file: use 'sqlite:///relative.db' or "
                "'sqlite:////absolute/path.db'"
            )
        # "sqlite:///rel.db" has the path "/rel.db"; "sqlite:////abs.db" has "//abs.db".
        path = Path(raw[1:])
        if raw.startswith("//"):
            path = Path("/" + raw.lstrip("/"))
        options = parse_url_options(
            url,
            {
                "visibility_timeout": positive_float,
                "result_ttl": positive_float,
                "dead_ttl": positive_float,
                "dead_max": positive_int,
                "synchronous": _synchronous,
                "busy_timeout": positive_float,
                "max_message_size": positive_int,
            },
        )
        return cls(path=Path(os.path.abspath(path)), **options)
