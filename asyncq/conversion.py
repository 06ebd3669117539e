"""Turning decoded JSON back into the types a handler's annotations name.

A job's arguments and result travel as JSON: a dataclass arrives as an object, a datetime,
UUID, Decimal or Path as a string, an enum as its value, a set or tuple as an array. The
worker converts each value whose annotation asks for more than JSON gives (``msgspec``'s
``convert``: dataclasses, attrs classes, TypedDicts, NamedTuples, datetime/date/time, UUID,
Decimal, Enum, and containers of them, checked as it goes), plus ``pathlib`` paths and
pydantic models through a hook. Annotations that JSON already satisfies (``int``, ``str``,
``list[str]``, ``dict[str, float]``, unannotated, ``Any``...) are left alone, so plain
handlers pay nothing.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

import msgspec

__all__ = ["ConversionError", "converter"]

Converter = Callable[[Any], Any]

_JSON_SCALARS: frozenset[Any] = frozenset({int, float, str, bool, type(None), None, Any, object})
_UNIONS = (typing.Union, types.UnionType)


class ConversionError(ValueError):
    """A value that does not convert to its annotation; ``path`` says where inside it."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


def converter(annotation: Any) -> Converter | None:
    """A function turning decoded JSON into ``annotation``, or None when the JSON value
    already is one (nothing to do). Raises ``TypeError`` for an annotation no conversion
    supports (a callable, say)."""
    if _json_native(annotation):
        return None
    # An annotation nothing converts to fails here, once, rather than every job with it.
    for cls in _custom_classes(msgspec.inspect.type_info(annotation), set()):
        if not _convertible(cls):
            raise TypeError(f"no conversion to {cls!r}")

    def convert(value: Any) -> Any:
        try:
            return msgspec.convert(value, annotation, dec_hook=_from_json, str_keys=True)
        except msgspec.ValidationError as exc:
            message, _, path = str(exc).partition(" - at `")
            raise ConversionError(message, path.rstrip("`") or "$") from None

    return convert


def _json_native(annotation: Any) -> bool:
    """Whether every value JSON decodes for ``annotation`` already has that type."""
    if annotation in _JSON_SCALARS or isinstance(annotation, typing.TypeVar):
        return True
    if annotation is list or annotation is dict:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _json_native(args[0])
    if origin is typing.Literal:
        return all(type(a) in (int, str, bool, type(None)) for a in args)
    if origin in _UNIONS:
        return all(_json_native(a) for a in args)
    if origin is list:
        return all(_json_native(a) for a in args)
    if origin is dict:
        return len(args) == 2 and args[0] is str and _json_native(args[1])
    return False


def _custom_classes(info: Any, seen: set[int]) -> list[Any]:
    """The classes msgspec leaves to ``_from_json`` anywhere inside a type."""
    if id(info) in seen:  # a recursive type refers back to itself
        return []
    seen.add(id(info))
    if isinstance(info, msgspec.inspect.CustomType):
        return [info.cls]
    found: list[Any] = []
    for name in getattr(info, "__struct_fields__", ()):
        value = getattr(info, name)
        for item in value if isinstance(value, tuple) else (value,):
            inner = item.type if isinstance(item, msgspec.inspect.Field) else item
            if isinstance(inner, msgspec.inspect.Type):
                found += _custom_classes(inner, seen)
    return found


def _convertible(cls: Any) -> bool:
    return isinstance(cls, type) and (
        issubclass(cls, PurePath) or callable(getattr(cls, "model_validate", None))
    )


def _from_json(kind: Any, value: Any) -> Any:
    """What msgspec leaves to the caller: paths, and pydantic models when pydantic is
    installed (found by their ``model_validate``, so pydantic is never imported here)."""
    if isinstance(kind, type):
        if issubclass(kind, PurePath) and isinstance(value, str):
            return kind(value)
        validate = getattr(kind, "model_validate", None)
        if validate is not None:
            return validate(value)
    # A TypeError becomes msgspec's ValidationError, with the path to the value.
    raise TypeError(f"Expected `{getattr(kind, '__name__', kind)}`, got `{type(value).__name__}`")
