"""`pycoro::coroutine_fn!`: native coroutine functions made by pycoro
itself (no `#[pyfunction]`), compared with the same `async def`.

The probe's `ready`, `await_`, `pair`, `nothing` and `call_first` are
such functions; each twin below has the same name, so that CPython's
argument errors (which name the function) read the same.
"""

import asyncio
import gc
import inspect
import sys
import types
import warnings

import pytest

import pycoro_harness as h
from compare import describe_exc


async def pair(first, second):
    return (first, second)


async def nothing():
    return None


async def call_first(f):
    f()
    return "called"


TWINS = {h.pair: pair, h.nothing: nothing, h.call_first: call_first}


def outcome(call):
    """Call, then run the coroutine it made: ("return", v) or ("raise", exc)."""
    try:
        return ("return", asyncio.run(call()))
    except BaseException as e:
        return ("raise", describe_exc(e))


CALLS = [
    ((), {}),
    ((1,), {}),
    ((1, 2), {}),
    ((1, 2, 3), {}),
    ((1, 2, 3, 4), {}),
    ((1,), {"second": 2}),
    ((), {"first": 1, "second": 2}),
    ((), {"second": 2, "first": 1}),
    ((), {"second": 2}),
    ((1,), {"first": 2}),
    ((1, 2), {"first": 3}),
    ((1, 2), {"third": 3}),
    ((1, 2, 3), {"first": 1}),
    ((1, 2, 3), {"third": 3}),
    ((), {"first": 1, "second": 2, "other": 3}),
]


@pytest.mark.parametrize("native", [h.pair, h.nothing])
@pytest.mark.parametrize("args, kwargs", CALLS)
def test_arguments_are_bound_as_async_def_binds_them(native, args, kwargs):
    twin = TWINS[native]
    got = outcome(lambda: native(*args, **kwargs))
    want = outcome(lambda: twin(*args, **kwargs))
    assert got == want


async def ready(value):
    return value


def test_one_parameter_functions_bind_like_async_def():
    for args, kwargs in [((), {}), ((1,), {}), ((1, 2), {}), ((), {"value": 1}),
                         ((), {"other": 1}), ((1,), {"value": 2})]:
        assert outcome(lambda: h.ready(*args, **kwargs)) == outcome(
            lambda: ready(*args, **kwargs)), (args, kwargs)


def test_the_body_runs_at_the_first_step():
    for make in (h.call_first, call_first):
        calls = []
        c = make(lambda: calls.append("body"))
        assert type(c) is types.CoroutineType
        assert calls == []      # nothing of the body ran at the call
        assert asyncio.run(c) == "called"
        assert calls == ["body"]


def test_an_exception_of_the_body_is_raised_at_the_first_step():
    def boom():
        raise KeyError("boom")
    for make in (h.call_first, call_first):
        c = make(boom)          # the call itself succeeds
        with pytest.raises(KeyError, match="boom"):
            c.send(None)


@pytest.mark.parametrize("native", sorted(TWINS, key=lambda f: f.__name__))
def test_name_signature_and_doc(native):
    twin = TWINS[native]
    assert native.__name__ == twin.__name__
    assert native.__module__ == "pycoro_harness"
    assert str(inspect.signature(native)) == str(inspect.signature(twin))
    assert f"async def {twin.__name__}(" in native.__doc__


def test_arguments_are_released_like_async_def():
    obj = object()
    base = sys.getrefcount(obj)
    for make in (h.pair, pair):
        # A failed call keeps no reference.
        with pytest.raises(TypeError):
            make(obj, obj, obj)
        assert sys.getrefcount(obj) == base
        # Made and closed before its first step: released by the close.
        make(obj, obj).close()
        assert sys.getrefcount(obj) == base
        # Run to the end: the result holds them until it goes.
        result = asyncio.run(make(obj, obj))
        assert result == (obj, obj)
        del result
        assert sys.getrefcount(obj) == base


def test_never_awaited_warning_like_async_def():
    seen = {}
    for make in (h.pair, pair):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            c = make(1, 2)
            del c
            gc.collect()
        seen[make] = [(x.category, str(x.message)) for x in w]
    assert seen[h.pair] == seen[pair] == [
        (RuntimeWarning, "coroutine 'pair' was never awaited")]
