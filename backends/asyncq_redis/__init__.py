"""asyncq's Redis Streams backend: ``asyncq.App("redis://127.0.0.1:6379/0")``.

URL options (query string): ``prefix`` (default ``asyncq``), ``visibility_timeout`` (seconds,
default 30), ``result_ttl`` (seconds, default 86400), ``max_connections`` (default 64), and
the client's ``socket_timeout`` and ``socket_connect_timeout`` (seconds, default 5, at most
300) and ``retry_on_timeout`` (``true`` or ``false``, default ``true``). An AMQP broker's
``records=`` URL takes the same three connection options.
Needs Redis 6.2 or newer and ``pip install 'asyncq[redis]'``.

Besides the backend, one module is public: :mod:`asyncq_redis.records`, the record layer a
backend that keeps its job records in Redis builds on (the AMQP backend's ``records=``
store does). Everything else here may change.
"""

from .backend import RedisBackend
from .settings import RedisConnection, RedisSettings

__all__ = ["RedisBackend", "RedisConnection", "RedisSettings"]
