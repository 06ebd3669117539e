"""Rate and concurrency limits of a task: what ``@app.task(rate_limit=, concurrency_limit=)``
take, checked at decoration, and the name of the limit one job counts against.

A limit is global: its state lives in the broker's JobStore, so every worker of the broker
shares it. With ``key=`` (the name of a handler parameter) there is one limit per value of
that argument, named ``<task>|<value>``; the value is percent-escaped so it never carries a
brace (a Redis Cluster hash tag) or the separator.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ORDER_HEADER",
    "ConcurrencyLimit",
    "KeyReader",
    "RateLimit",
    "TaskLimits",
    "concurrency_limit",
    "rate_limit",
]

ORDER_HEADER = "asyncq-order"
"""The header that carries a job's ticket in its key's line, for a concurrency limit of 1:
its jobs start in enqueue order."""

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([smhd])\s*$")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` starts in any window of ``per`` seconds, across every worker (per
    value of the handler's argument ``key``, when given). Retries and snoozed jobs count as
    starts. A sliding log: no window, wherever it falls, holds more than ``limit``."""

    limit: int
    per: float = 1.0
    key: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ValueError(f"RateLimit limit must be an int >= 1, not {self.limit!r}")
        if isinstance(self.per, bool) or not isinstance(self.per, int | float):
            raise ValueError(f"RateLimit per must be seconds > 0, not {self.per!r}")
        if not self.per > 0 or self.per > 86400 * 7:
            raise ValueError(f"RateLimit per must be seconds in (0, 604800], not {self.per!r}")
        _check_key_name(self.key)

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """``"100/s"``, ``"10/m"``, ``"1000/h"``, ``"5/d"``, also ``"3/10s"`` (per 10 s)."""
        match = _RATE.match(text)
        if match is None or match.group(2) in (".",):
            raise ValueError(
                f"rate_limit {text!r} is not of the form '<count>/<unit>' "
                "with unit s, m, h or d (e.g. '100/s', '10/m', '3/10s')"
            )
        count, scale, unit = match.groups()
        return cls(int(count), per=float(scale or 1) * _UNITS[unit])


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    """At most ``limit`` jobs running at once across every worker (per value of the handler's
    argument ``key``, when given). A permit lives with the job's lease: a lost worker's
    permits come back when their lease runs out; a finished or released job gives its
    permit back at once. With a limit of 1 the jobs (of each key) start in the order they
    were enqueued, whatever their priorities; a retry runs when the key is free."""

    limit: int
    key: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ValueError(f"ConcurrencyLimit limit must be an int >= 1, not {self.limit!r}")
        _check_key_name(self.key)


def rate_limit(value: str | RateLimit | None) -> RateLimit | None:
    """``@app.task(rate_limit=)`` as a RateLimit (None: no limit)."""
    if value is None or isinstance(value, RateLimit):
        return value
    if isinstance(value, str):
        return RateLimit.parse(value)
    raise ValueError(f"rate_limit must be a string like '100/s' or a RateLimit, not {value!r}")


def concurrency_limit(value: int | ConcurrencyLimit | None) -> ConcurrencyLimit | None:
    """``@app.task(concurrency_limit=)`` as a ConcurrencyLimit (None: no limit)."""
    if value is None or isinstance(value, ConcurrencyLimit):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return ConcurrencyLimit(value)
    raise ValueError(f"concurrency_limit must be an int or a ConcurrencyLimit, not {value!r}")


def _check_key_name(key: str | None) -> None:
    if key is not None and (not isinstance(key, str) or not key.isidentifier()):
        raise ValueError(f"a limit's key must name a handler parameter, not {key!r}")


def _escape(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text.replace("%", "%25").replace("{", "%7B").replace("}", "%7D").replace("|", "%7C")


class KeyReader:
    """Reads the value of one handler parameter from a job's arguments, the way the
    handler will be called with them: by keyword, else by position, else its default."""

    __slots__ = ("_default", "_name", "_position")

    def __init__(self, fn: Callable[..., Any], name: str, task: str) -> None:
        try:
            parameters = inspect.signature(fn).parameters
        except (TypeError, ValueError):  # a builtin without a signature: nothing to read
            parameters = {}  # type: ignore[assignment]
        parameter = parameters.get(name)
        kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        if parameter is None or parameter.kind in kinds:
            have = ", ".join(p for p, v in parameters.items() if v.kind not in kinds)
            raise ValueError(
                f"task {task!r} limits by key={name!r}, but its handler has no parameter "
                f"of that name (it has: {have or 'none'})"
            )
        self._name = name
        self._position: int | None = None
        if parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            self._position = list(parameters).index(name)
        self._default = parameter.default

    def read(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if self._name in kwargs:
            return kwargs[self._name]
        if self._position is not None and self._position < len(args):
            return args[self._position]
        return None if self._default is inspect.Parameter.empty else self._default

    def limit_name(self, task: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        """The name of the limit the job with these arguments counts against."""
        return f"{task}|{_escape(self.read(args, kwargs))}"


class TaskLimits:
    """The names of the limits one task's jobs count against, read from their arguments."""

    __slots__ = ("_concurrency_key", "_rate_key", "_task", "concurrency_name", "rate_name")

    def __init__(
        self,
        fn: Callable[..., Any],
        task: str,
        rate: RateLimit | None,
        concurrency: ConcurrencyLimit | None,
    ) -> None:
        self._task = _escape(task)
        self.rate_name = self._task
        """The rate limit's name, when it has no key."""
        self.concurrency_name = self._task
        self._rate_key = KeyReader(fn, rate.key, task) if rate and rate.key else None
        self._concurrency_key = (
            KeyReader(fn, concurrency.key, task) if concurrency and concurrency.key else None
        )

    def rate(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        reader = self._rate_key
        return self.rate_name if reader is None else reader.limit_name(self._task, args, kwargs)

    def concurrency(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        reader = self._concurrency_key
        if reader is None:
            return self.concurrency_name
        return reader.limit_name(self._task, args, kwargs)
