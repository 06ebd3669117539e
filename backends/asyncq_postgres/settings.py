"""The options of a ``postgresql://`` (or ``postgres://``) broker URL, parsed once into
:class:`PostgresSettings`; the rest of the URL (user, password, host, port, database and
libpq's own options such as ``sslmode``) is handed to asyncpg as it is.

asyncq's options, in the query string:

* ``schema`` (default ``asyncq``): the schema that holds asyncq's tables, created on first
  connect; every statement names it, so a connection with any ``search_path`` can enqueue;
* ``visibility_timeout`` (seconds, default 30): how long a delivered, unsettled job waits for
  its worker's lease renewal before another worker may take it;
* ``result_ttl`` (seconds, default 86400): how long finished jobs' rows and results stay;
* ``dead_ttl`` (seconds) and ``dead_max`` (per queue), default none: the dead letters kept;
* ``pool_size`` (default 10): the connections of each App's pool (a worker holds one more,
  for ``LISTEN``, unless ``listen=false``);
* ``statement_timeout`` and ``lock_timeout`` (seconds, defaults 30 and 5): set on every
  connection asyncq opens, so a stuck statement or lock fails instead of hanging;
* ``listen`` (``true`` by default): wake-ups by ``LISTEN``/``NOTIFY``. ``false``: workers
  and result waiters look every ``poll_interval`` instead (and prepared statements are off);
* ``pgbouncer`` (``false`` by default): ``true`` to connect through PgBouncer in transaction
  (or statement) mode. It implies ``listen=false`` (a session's ``LISTEN`` is not kept when
  its server connection goes to another client; ``listen=true`` beside it is refused), turns
  prepared statements off (PgBouncer before 1.21 cannot route them), and does not send
  ``statement_timeout`` and ``lock_timeout`` at connect (PgBouncer refuses startup
  parameters it does not know): set them on the role instead (``ALTER ROLE ... SET
  statement_timeout = '30s'``); a worker logs a warning at start when they are off;
* ``listen_url`` (none by default): a direct connection to the same database, bypassing
  PgBouncer, for ``LISTEN`` alone (URL-encoded in the query string). With it, ``pgbouncer=true``
  keeps instant wake-ups: each worker (or result waiter) holds that one direct connection,
  everything else goes through the bouncer;
* ``poll_interval`` (seconds, default 1, or 0.05 with ``listen=false``): how often an idle
  worker looks for jobs when no notification comes (the safety net under ``LISTEN``);
* ``max_message_size`` (bytes, default none): refuse larger jobs at enqueue;
* ``migrate`` (``true`` by default): create or upgrade the schema on connect. ``false`` for
  teams that apply migrations themselves (``asyncq db upgrade --dry-run`` prints them): a
  schema that is missing or behind is then an error at start, naming the command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from asyncq.backend import parse_url_options, positive_float, positive_int
from asyncq.errors import ConfigurationError

__all__ = ["PostgresSettings"]

OPTIONS = (
    "schema",
    "visibility_timeout",
    "result_ttl",
    "dead_ttl",
    "dead_max",
    "pool_size",
    "statement_timeout",
    "lock_timeout",
    "listen",
    "pgbouncer",
    "listen_url",
    "poll_interval",
    "max_message_size",
    "migrate",
)

LIBPQ_OPTIONS = frozenset(
    {
        "host", "port", "user", "password", "passfile", "dbname", "database", "sslmode",
        "sslcert", "sslkey", "sslrootcert", "sslcrl", "sslpassword", "sslnegotiation",
        "ssl_min_protocol_version", "ssl_max_protocol_version", "target_session_attrs",
        "krbsrvname", "gsslib", "service", "application_name", "connect_timeout",
    }
)  # fmt: skip
"""The connection options asyncpg takes from a URL's query string; anything else there is
a mistake (asyncpg would send it to the server as a setting, which refuses it late)."""

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,50}")


def _schema(raw: str) -> str:
    if not _IDENTIFIER.fullmatch(raw):
        raise ValueError(
            "must be a lower-case identifier: a letter or _, then letters, digits or _ "
            "(at most 51 characters)"
        )
    return raw


def _postgres_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("postgresql", "postgres") or not (parts.netloc or parts.path):
        raise ValueError(
            "must be a postgresql:// URL of the same database, URL-encoded, e.g. "
            "listen_url=postgresql%3A%2F%2Fapp%40db%3A5432%2Fshop"
        )
    return raw


def _boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered not in ("true", "false"):
        raise ValueError("must be true or false")
    return lowered == "true"


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    dsn: str
    """The URL without asyncq's options, for asyncpg."""
    schema: str = "asyncq"
    visibility_timeout: float = 30.0
    result_ttl: float = 86400.0
    dead_ttl: float | None = None
    dead_max: int | None = None
    pool_size: int = 10
    statement_timeout: float = 30.0
    lock_timeout: float = 5.0
    listen: bool = True
    pgbouncer: bool = False
    listen_url: str | None = None
    """Where the ``LISTEN`` connection goes, when not to ``dsn``."""
    poll_interval: float | None = None
    max_message_size: int | None = None
    migrate: bool = True

    @property
    def idle_look(self) -> float:
        """Seconds between an idle worker's looks when no notification comes."""
        if self.poll_interval is not None:
            return self.poll_interval
        return 1.0 if self.listen else 0.05

    @classmethod
    def from_url(cls, url: str) -> PostgresSettings:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ConfigurationError(f"not a PostgreSQL URL: {parts.scheme}://")
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        theirs = [(k, v) for k, v in pairs if k not in OPTIONS]
        for name, _ in theirs:
            if name not in LIBPQ_OPTIONS:
                known = ", ".join(sorted(OPTIONS))
                raise ConfigurationError(
                    f"unknown option {name!r} in a PostgreSQL broker URL (asyncq's: {known}; "
                    "and libpq's connection options such as sslmode)"
                )
        ours = urlencode([(k, v) for k, v in pairs if k in OPTIONS])
        options = parse_url_options(
            f"postgresql://x/?{ours}",
            {
                "schema": _schema,
                "visibility_timeout": positive_float,
                "result_ttl": positive_float,
                "dead_ttl": positive_float,
                "dead_max": positive_int,
                "pool_size": positive_int,
                "statement_timeout": positive_float,
                "lock_timeout": positive_float,
                "listen": _boolean,
                "pgbouncer": _boolean,
                "listen_url": _postgres_url,
                "poll_interval": positive_float,
                "max_message_size": positive_int,
                "migrate": _boolean,
            },
        )
        if "listen_url" in options:
            if options.get("listen") is False:
                raise ConfigurationError(
                    "listen=false and listen_url contradict each other: drop one"
                )
            options["listen"] = True
        elif options.get("pgbouncer"):
            if options.get("listen") is True:
                raise ConfigurationError(
                    "listen=true cannot work with pgbouncer=true: PgBouncer in transaction "
                    "mode gives a session's server connection to other clients, and its "
                    "LISTEN with it; drop listen=true (workers then poll every "
                    "poll_interval), or add listen_url= with a direct connection for LISTEN"
                )
            options["listen"] = False
        dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(theirs), ""))
        return cls(dsn=dsn, **options)
