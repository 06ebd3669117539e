"""A handler's parameters: the check of a call's arguments at enqueue, and their decoding
by the handler's annotations in the worker.

Both run for every job, so both are built once per task, on first use (annotations may
name classes defined after the handler), and take a fast path for the common shapes: the
check costs a few comparisons instead of ``inspect.Signature.bind`` (about 4 µs), and a
handler whose annotations JSON already satisfies decodes nothing at all.
"""

from __future__ import annotations

import inspect
import logging
import math
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .conversion import ConversionError, Converter, converter

__all__ = ["BadArguments", "Parameters"]

log = logging.getLogger("asyncq.task")

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class BadArguments(ValueError):
    """A job's arguments do not fit its handler: the wrong number, or a value that does not
    convert to its parameter's annotation."""


class Parameters:
    """The parameters of one handler, named ``task`` in messages."""

    __slots__ = (
        "_decode_args",
        "_decode_kwargs",
        "_decode_result",
        "_fn",
        "_keyword_index",
        "_keyword_names",
        "_keyword_only_required",
        "_leading_required",
        "_max_positional",
        "_positional_required",
        "_ready",
        "_required_by_name",
        "_result_annotation",
        "_signature",
        "_taken_by_position",
        "_task",
        "_var_keyword",
        "_var_keyword_converter",
        "_var_positional_converter",
        "converts_arguments",
    )

    def __init__(self, fn: Callable[..., Any], task: str) -> None:
        self._fn = fn
        self._task = task
        self._ready = False
        self.converts_arguments = True
        """Whether ``decode`` has anything to do; known for sure once prepared (on first
        use), so the worker can skip the call for plain handlers."""

    # -- the check at enqueue --------------------------------------------------------------
    def check(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise ``TypeError`` if ``args`` and ``kwargs`` do not fit the handler."""
        if not self.fits(args, kwargs):
            problem = self.problem(args, kwargs)
            if problem is not None:
                raise TypeError(problem)

    def fits(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
        """Whether the arguments bind to the parameters; a quick, exact test."""
        if not self._ready:
            self._prepare()
        count = len(args)
        if count < self._positional_required or count > self._max_positional:
            return False
        if not kwargs:
            return count >= self._leading_required and not self._keyword_only_required
        # Set operations per count of positional arguments, built once: no Python loop.
        at = min(count, len(self._taken_by_position) - 1)
        if not self._var_keyword and not self._keyword_names.issuperset(kwargs):
            return False  # an unknown name
        if not self._taken_by_position[at].isdisjoint(kwargs):
            return False  # given positionally already
        required = self._required_by_name[at]
        return not required or kwargs.keys() >= required

    def problem(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
        """Why the arguments do not fit, in Python's words, or None if they do."""
        if not self._ready:
            self._prepare()
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            hint = ""
            options = {"delay", "at", "key", "queue", "headers", "retries", "timeout"}
            if set(kwargs) & options and not set(kwargs) & set(self._keyword_index):
                hint = "; options such as delay= go in task.options(...).enqueue(...)"
            return f"arguments do not fit {self._task}{self._signature}: {exc}{hint}"
        return None

    # -- decoding in the worker ------------------------------------------------------------
    def decode(
        self, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> tuple[Sequence[Any], dict[str, Any]]:
        """The arguments converted to their parameters' annotations; ``BadArguments`` names
        the parameter (and the field inside it) that does not convert."""
        if not self._ready:
            self._prepare()
            if not self.converts_arguments:
                return args, kwargs
        positional = self._decode_args
        rest = self._var_positional_converter
        decoded_args = list(args)
        for i, value in enumerate(args):
            if i < len(positional):
                name, convert = positional[i]
            else:
                name, convert = f"*args[{i - len(positional)}]", rest
            if convert is not None:
                decoded_args[i] = self._convert(convert, value, name)
        decoded_kwargs = dict(kwargs)
        by_name, rest = self._decode_kwargs, self._var_keyword_converter
        for name, value in kwargs.items():
            convert = by_name.get(name, rest)
            if convert is not None:
                decoded_kwargs[name] = self._convert(convert, value, name)
        return decoded_args, decoded_kwargs

    def decode_result(self, value: Any) -> Any:
        """The handler's return value, as its return annotation names it."""
        if not self._ready:
            self._prepare()
        convert = self._decode_result
        if convert is None:
            return value
        try:
            return convert(value)
        except ConversionError as exc:
            raise TypeError(
                f"the result of {self._task} does not convert to its return annotation "
                f"{self._result_annotation!r}: {exc} at {exc.path.replace('$', 'result', 1)}"
            ) from None

    def _convert(self, convert: Converter, value: Any, name: str) -> Any:
        try:
            return convert(value)
        except ConversionError as exc:
            where = exc.path.replace("$", name, 1)
            raise BadArguments(f"argument {name!r} of {self._task}: {exc} (at {where})") from None

    # -- built once ------------------------------------------------------------------------
    def _prepare(self) -> None:
        try:  # show `a: int`, not `a: 'int'`, for modules with postponed annotations
            signature = inspect.signature(self._fn, eval_str=True)
        except Exception:
            signature = inspect.signature(self._fn)
        hints = self._hints()
        params = list(signature.parameters.values())
        positional = [p for p in params if p.kind in _POSITIONAL]
        var_positional = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
        self._signature = signature
        self._max_positional = math.inf if var_positional else len(positional)
        # Positional parameters without a default come first, so the required ones are a
        # prefix: positional-only ones must be passed by position, the others by position
        # or by name.
        required = [p.default is inspect.Parameter.empty for p in positional]
        self._leading_required = sum(required)
        self._positional_required = sum(
            r
            for r, p in zip(required, positional, strict=True)
            if p.kind is inspect.Parameter.POSITIONAL_ONLY
        )
        # Where a keyword's parameter sits among the positional ones (keyword-only ones
        # sit after any number of positional arguments).
        self._keyword_index = {
            p.name: (positional.index(p) if p in positional else sys.maxsize)
            for p in params
            if p.kind in _KEYWORD
        }
        self._keyword_names = frozenset(self._keyword_index)
        # For n positional arguments: the names they took, and the required parameters
        # that must then come by name.
        self._taken_by_position = tuple(
            frozenset(p.name for p in positional[:n] if p.kind in _KEYWORD)
            for n in range(len(positional) + 1)
        )
        self._required_by_name = tuple(
            frozenset(
                p.name
                for p in params
                if p.kind in _KEYWORD
                and p.default is inspect.Parameter.empty
                and self._keyword_index[p.name] >= n
            )
            for n in range(len(positional) + 1)
        )
        self._keyword_only_required = any(
            p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
            for p in params
        )
        self._var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)

        converters = {p.name: self._converter_for(p.name, hints) for p in params}
        self._decode_args = tuple((p.name, converters[p.name]) for p in positional)
        self._decode_kwargs = {p.name: converters[p.name] for p in params if p.kind in _KEYWORD}
        self._var_positional_converter = next(
            (converters[p.name] for p in params if p.kind is inspect.Parameter.VAR_POSITIONAL),
            None,
        )
        self._var_keyword_converter = next(
            (converters[p.name] for p in params if p.kind is inspect.Parameter.VAR_KEYWORD),
            None,
        )
        self.converts_arguments = any(c is not None for c in converters.values())
        self._result_annotation = hints.get("return")
        self._decode_result = self._converter_for("return", hints)
        self._ready = True

    def _hints(self) -> dict[str, Any]:
        try:
            return typing.get_type_hints(self._fn, include_extras=True)
        except Exception as exc:  # a name only known to a type checker, say
            log.warning(
                "the annotations of %s cannot be resolved (%s: %s): its arguments and "
                "result arrive as decoded JSON, unconverted",
                self._task,
                type(exc).__name__,
                exc,
            )
            return {}

    def _converter_for(self, name: str, hints: Mapping[str, Any]) -> Converter | None:
        if name not in hints:
            return None
        try:
            return converter(hints[name])
        except TypeError as exc:
            log.warning(
                "%s: the annotation of %r (%r) cannot be converted to (%s); its values "
                "arrive as decoded JSON",
                self._task,
                name,
                hints[name],
                exc,
            )
            return None
