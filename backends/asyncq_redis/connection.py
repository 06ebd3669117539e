"""redis-py connections whose commands are encoded by hiredis.

A worker's hot commands are EVALSHA calls carrying hundreds of arguments (a batch of
settlements); hiredis encodes them in C, about five times faster than redis-py's own
Python encoder, which the asyncio client uses even when hiredis is installed.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import Connection, SSLConnection

__all__ = ["HiredisConnection", "HiredisSSLConnection"]


def _pack(args: tuple[Any, ...]) -> list[bytes]:
    # redis-py lets a command name carry its subcommand ("CONFIG GET"); the server wants
    # them as separate arguments.
    if isinstance(args[0], str) and " " in args[0]:
        args = (*args[0].split(), *args[1:])
    return [hiredis.pack_command(args)]


class HiredisConnection(Connection):
    def pack_command(self, *args: Any) -> list[bytes]:
        return _pack(args)


class HiredisSSLConnection(SSLConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        return _pack(args)
