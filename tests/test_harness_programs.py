"""Random programs of native coroutines against their async def twins.

A program is a tree of the probe's operations (ready, fail, yield_now,
await_, await_all, catch).  Hypothesis builds it twice, once from native
coroutines (``pycoro_harness``) and once from the ``async def`` twins in
``test_harness``, drives both the same way (a bare send loop with a throw
or close at some suspension, or asyncio with a cancel after some loop
iterations) and requires the same yields and the same outcome.
"""

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pycoro_harness as h
from test_harness import (
    describe_exc, py_await_, py_await_all, py_catch, py_fail, py_ready, py_yield_now,
)

# Children are created eagerly (as arguments), so a program that fails
# early leaves coroutines never awaited, in both versions alike.
pytestmark = pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")

EXC_TYPES = {
    "ValueError": ValueError,
    "KeyError": KeyError,
    "LookupError": LookupError,
    "StopIteration": StopIteration,
    "CancelledError": asyncio.CancelledError,
    "GeneratorExit": GeneratorExit,
}

leaves = st.one_of(
    st.tuples(st.just("ready"), st.integers(-3, 3)),
    st.tuples(st.just("fail"), st.sampled_from(sorted(EXC_TYPES)), st.text("ab", max_size=3)),
    st.tuples(st.just("yield"), st.integers(0, 3)),
)


def extend(children):
    return st.one_of(
        st.tuples(st.just("await"), children),
        st.tuples(st.just("all"), st.lists(children, max_size=3).map(tuple)),
        st.tuples(st.just("catch"), children, st.sampled_from(sorted(EXC_TYPES))),
    )


programs = st.recursive(leaves, extend, max_leaves=8)

NATIVE = {"ready": h.ready, "fail": h.fail, "yield": h.yield_now,
          "await": h.await_, "all": h.await_all, "catch": h.catch}
TWIN = {"ready": py_ready, "fail": py_fail, "yield": py_yield_now,
        "await": py_await_, "all": py_await_all, "catch": py_catch}


def build(prog, ops):
    kind = prog[0]
    if kind == "ready":
        return ops[kind](prog[1])
    if kind == "fail":
        return ops[kind](EXC_TYPES[prog[1]](prog[2]))
    if kind == "yield":
        return ops[kind](prog[1])
    if kind == "await":
        return ops[kind](build(prog[1], ops))
    if kind == "all":
        return ops[kind](*(build(p, ops) for p in prog[1]))
    if kind == "catch":
        return ops[kind](build(prog[1], ops), EXC_TYPES[prog[2]])
    raise AssertionError(prog)


def norm(v):
    if isinstance(v, BaseException):
        return ("exception", describe_exc(v))
    if isinstance(v, list):
        return [norm(x) for x in v]
    return v


def same_frame_shape(outcome):
    """A bare yield is in the native frame itself, while its twin yields
    from asyncio.sleep(0)'s generator: StopIteration thrown there becomes
    "coroutine raised StopIteration" in one and "generator raised
    StopIteration" in the other (PEP 479 names the frame that raised)."""
    if outcome[0] == "raise" and outcome[1][0] is RuntimeError:
        typ, msg, args, ctx, cause = outcome[1]
        if msg == "generator raised StopIteration":
            msg = "coroutine raised StopIteration"
            args = (msg,)
        return ("raise", (typ, msg, args, ctx, cause))
    return outcome


def finish(coro, fn, *args):
    try:
        return ("yield", norm(fn(*args)))
    except StopIteration as e:
        return ("return", norm(e.value))
    except BaseException as e:
        return ("raise", describe_exc(e))


def drive_send(coro, action, at, exc_name):
    """Send None; at the `at`-th suspension throw or close; go on."""
    trace = []
    for i in range(200):
        if i == at and action == "throw":
            step = finish(coro, coro.throw, EXC_TYPES[exc_name]("thrown"))
        elif i == at and action == "close":
            step = finish(coro, coro.close)
            trace.append(step)
            break
        else:
            step = finish(coro, coro.send, None)
        trace.append(step)
        if step[0] != "yield":
            break
    coro.close()
    return [same_frame_shape(step) for step in trace]


def drive_asyncio(make, cancel_after):
    async def main():
        task = asyncio.ensure_future(make())
        for _ in range(cancel_after):
            if task.done():
                break
            await asyncio.sleep(0)
        task.cancel("random cancel")
        try:
            return ("return", norm(await task))
        except BaseException as e:
            return ("raise", describe_exc(e))
    return asyncio.run(main())


SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(programs, st.sampled_from(["none", "throw", "close"]), st.integers(0, 4),
       st.sampled_from(sorted(EXC_TYPES)))
def test_random_program_send_loop(prog, action, at, exc_name):
    native = drive_send(build(prog, NATIVE), action, at, exc_name)
    twin = drive_send(build(prog, TWIN), action, at, exc_name)
    assert native == twin, prog


@SETTINGS
@given(programs, st.integers(0, 6))
def test_random_program_asyncio_cancel(prog, cancel_after):
    native = drive_asyncio(lambda: build(prog, NATIVE), cancel_after)
    twin = drive_asyncio(lambda: build(prog, TWIN), cancel_after)
    assert native == twin, prog
