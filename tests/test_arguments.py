"""The quick argument check agrees with ``inspect.Signature.bind`` on every shape of
signature and call, and the cost of the check on the enqueue path."""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from asyncq.arguments import Parameters
from asyncq.conversion import converter


def pos_or_kw(a: int, b: int) -> None: ...
def with_default(a: int, b: int = 0) -> None: ...
def keyword_only(a: int, *, b: int, c: int = 0) -> None: ...
def positional_only(a: int, /, b: int) -> None: ...
def var_positional(a: int, *rest: int) -> None: ...
def var_keyword(a: int, **rest: int) -> None: ...
def everything(
    a: int, /, b: int, c: int = 0, *rest: int, d: int, e: int = 0, **kw: int
) -> None: ...
def nothing() -> None: ...


SIGNATURES: list[Callable[..., Any]] = [
    pos_or_kw,
    with_default,
    keyword_only,
    positional_only,
    var_positional,
    var_keyword,
    everything,
    nothing,
]
NAMES = ["a", "b", "c", "d", "e", "x"]


def calls() -> list[tuple[tuple[int, ...], dict[str, int]]]:
    found = []
    for count in range(5):
        for size in range(4):
            for names in itertools.combinations(NAMES, size):
                found.append((tuple(range(count)), dict.fromkeys(names, 1)))
    return found


@pytest.mark.parametrize("fn", SIGNATURES, ids=lambda fn: fn.__name__)
def test_the_quick_check_agrees_with_signature_bind(fn: Callable[..., Any]) -> None:
    parameters = Parameters(fn, fn.__name__)
    signature = inspect.signature(fn)
    for args, kwargs in calls():
        try:
            signature.bind(*args, **kwargs)
        except TypeError:
            binds = False
        else:
            binds = True
        assert parameters.fits(args, kwargs) is binds, (fn.__name__, args, kwargs)
        assert (parameters.problem(args, kwargs) is None) is binds


@pytest.mark.parametrize(
    "annotation",
    [int, str, float, bool, None, Any, list, dict, list[int], dict[str, list[str]], int | None],
)
def test_annotations_json_already_satisfies_need_no_conversion(annotation: Any) -> None:
    assert converter(annotation) is None


def test_an_annotation_nothing_converts_to_is_left_as_json() -> None:
    def handler(callback: Callable[[], None], n: int) -> None: ...

    parameters = Parameters(handler, "handler")
    args, kwargs = parameters.decode(["f"], {"n": 1})
    assert (list(args), kwargs) == (["f"], {"n": 1})
