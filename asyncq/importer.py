"""Load an App from a ``module:attribute`` string, the way uvicorn loads an ASGI app.

Each way this can go wrong gets its own message, because the fix differs: a module that
is not on the path, an attribute the module lacks, an attribute that is not an App, and
an error raised while the user's own module was being imported (reported with the file
and line it came from, in one line).
"""

from __future__ import annotations

import importlib
import os
import traceback
from typing import Any

from .app import App
from .errors import ConfigurationError

__all__ = ["AppImportError", "import_app", "import_from_string"]


class AppImportError(ConfigurationError):
    """The ``module:attribute`` string does not lead to what was asked for."""


def import_app(spec: str) -> App:
    """The :class:`App` that ``spec`` (``"package.module:app"``) names."""
    found = import_from_string(spec)
    if not isinstance(found, App):
        raise AppImportError(
            f"{spec!r} is {_a(type(found).__name__)}, not an asyncq.App"
            f"{_apps_hint(spec.partition(':')[0])}"
        )
    return found


def import_from_string(spec: str) -> Any:
    """The object ``spec`` names: ``module`` is imported, ``attr.sub`` is looked up in it."""
    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        raise AppImportError(
            f"{spec!r} is not in the form MODULE:ATTRIBUTE (e.g. 'myproject.tasks:app')"
        )
    if module_name.startswith("."):
        raise AppImportError(f"{module_name!r} is a relative module name; give the full one")
    module = _import_module(module_name)
    found: Any = module
    for name in attr_path.split("."):
        try:
            found = getattr(found, name)
        except AttributeError:
            raise AppImportError(
                f"module {module_name!r} has no attribute {attr_path!r}{_apps_hint(module_name)}"
            ) from None
    return found


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # The module itself (or a package above it) is missing only when the name that
        # failed is ours; any other name failed inside the user's code, e.g. a dependency.
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise AppImportError(
                f"module {name!r} not found (searched the current directory "
                f"{os.getcwd()!r} and PYTHONPATH)"
            ) from None
        raise AppImportError(f"importing module {name!r} failed: {_describe(exc)}") from None
    except Exception as exc:
        raise AppImportError(f"importing module {name!r} failed: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    """``Type: message (file, line n)`` on one line, naming where the user's code raised."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if isinstance(exc, SyntaxError):
        return text  # its message already names the file and line
    # The innermost frame that is not the import machinery's own.
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith("<frozen ")
        and not f.filename.endswith("importlib/__init__.py")
    ]
    if frames:
        text += f" ({_relative(frames[-1].filename)}, line {frames[-1].lineno})"
    return text


def _relative(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if relative.startswith("..") else relative


def _apps_hint(module_name: str) -> str:
    """Name the Apps the module does have, when it imported at all."""
    try:
        module = importlib.import_module(module_name)
    except Exception:
        return ""
    names = sorted(name for name, value in vars(module).items() if isinstance(value, App))
    if not names:
        return ""
    return f"; Apps in the module: {', '.join(f'{module_name}:{n}' for n in names)}"


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"
