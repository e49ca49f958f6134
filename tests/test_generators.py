"""Native generators and async generators of the harness against the same
generators written in Python.

``pycoro_harness.count`` (a Rust iterator) is a true ``types.GeneratorType``
and ``acount`` / ``agen_await`` (Rust streams) true
``types.AsyncGeneratorType`` objects.  Each scenario runs the native
generator and its Python twin (written in the probe's doc comments, and
below) the same way, under asyncio, trio and anyio (both backends) where a
runtime is involved, and compares what Python sees.
"""

import asyncio
import gc
import inspect
import sys
import sysconfig
import traceback
import types

import anyio
import pytest
import trio

import pycoro_harness as h
from monitoring_common import monitoring

CO_NATIVE = inspect.CO_NATIVE
RUNTIMES = ["asyncio", "trio", "anyio-asyncio", "anyio-trio"]


# --- Python twins of the probe's generators --------------------------------

def in_trio():
    return "trio" in sys.modules and trio.lowlevel.in_trio_task()


async def checkpoint():
    """What the harness's ``yield_now`` does: a schedule point of whatever
    runs the task (a bare yield outside trio)."""
    if in_trio():
        await trio.lowlevel.checkpoint()
    else:
        await asyncio.sleep(0)


def py_count(n):
    for i in range(n):
        yield i


def py_gen_fail(n, exc):
    for i in range(n):
        yield i
    raise exc


async def py_acount(n):
    for i in range(n):
        await checkpoint()
        yield i


async def py_agen_await(*awaitables):
    for aw in awaitables:
        yield await aw


async def value_after_checkpoint(value):
    await checkpoint()
    return value


async def fail_after_checkpoint(exc):
    await checkpoint()
    raise exc


class NeverAwaited:
    """An awaitable that must not be awaited (and, unlike a coroutine, does
    not warn when it is not)."""

    def __await__(self):
        raise AssertionError("awaited after the generator failed")


def seed_trio():
    # trio shuffles each batch of runnable tasks with its module's RNG:
    # seed it so that two runs of one program schedule alike (private).
    rng = getattr(trio._core._run, "_r", None)
    if rng is not None:
        rng.seed(0)


def run(runtime, main):
    """Run ``main()`` under ``runtime`` and return its result."""
    if runtime == "asyncio":
        return asyncio.run(main())
    if "trio" in runtime:
        seed_trio()
    if runtime == "trio":
        return trio.run(main)
    if runtime.startswith("anyio-"):
        return anyio.run(main, backend=runtime.split("-")[1])
    raise ValueError(runtime)


def outcome(func, *args):
    """("value", v), ("stop", StopIteration.value) or ("raise", type, str)."""
    try:
        return ("value", func(*args))
    except StopIteration as e:
        return ("stop", e.value)
    except BaseException as e:  # noqa: BLE001 - compared, not handled
        return ("raise", type(e), str(e))


def drive(aw):
    """Drive an awaitable with send(None): (values yielded, final outcome)."""
    yielded = []
    while True:
        res = outcome(aw.send, None)
        if res[0] != "value":
            return yielded, res
        yielded.append(res[1])


def agen_state(g):
    return (g.ag_running, g.ag_frame is None, g.ag_suspended,
            type(g.ag_await).__name__)


def describe(e):
    """What must agree between two versions of an exception."""
    if e is None:
        return None
    return (type(e), str(e), describe(e.__context__), describe(e.__cause__))


# --- generators: count, gen_fail, gen_panic --------------------------------

def test_count_is_a_generator():
    g = h.count(3)
    assert type(g) is types.GeneratorType
    assert inspect.isgenerator(g)
    assert g.gi_code.co_name == "count"
    assert g.gi_code.co_flags & (CO_NATIVE | inspect.CO_GENERATOR) == (
        CO_NATIVE | inspect.CO_GENERATOR)
    assert g.gi_code.co_filename.endswith("generators.rs")
    assert g.gi_frame.f_code is g.gi_code
    assert iter(g) is g


@pytest.mark.parametrize("n", [0, 1, 2, 50])
def test_count_consumers(n):
    consumers = [list, tuple, sum, sorted, set, enumerate,
                 lambda g: [x * 2 for x in g],
                 lambda g: list(zip(g, range(100, 200))),
                 lambda g: dict.fromkeys(g),
                 lambda g: list(map(str, g))]
    for consume in consumers:
        native = consume(h.count(n))
        python = consume(py_count(n))
        if consume is enumerate:
            native, python = list(native), list(python)
        assert native == python


def test_count_in_yield_from_and_for():
    def outer(make, n):
        total = yield from make(n)
        yield ("returned", total)
        for x in make(n):
            yield x

    assert list(outer(h.count, 4)) == list(outer(py_count, 4))


def test_for_site_sees_both_kinds():
    # One FOR_ITER site specialized for Python generators (FOR_ITER_GEN)
    # also gets native ones: it must not run their frame as bytecode.
    def consume(rounds):
        total = 0
        for i in range(rounds):
            for x in (h.count(3) if i % 3 == 0 else py_count(3)):
                total += x
        return total

    assert consume(600) == 600 * 3


def loop_events(make, rounds):
    """sys.monitoring events at a ``for`` loop over ``make(2)`` (its site
    warmed up first, so that it is specialized to FOR_ITER_GEN): the loop
    function's own events, and the generator's."""
    def consume(make, rounds):
        total = 0
        for i in range(rounds):
            for x in make(2):
                total += x
        return total

    consume(make, 50)
    E = sys.monitoring.events
    wanted = {E.PY_START: "PY_START", E.PY_RESUME: "PY_RESUME",
              E.PY_YIELD: "PY_YIELD", E.PY_RETURN: "PY_RETURN",
              E.RAISE: "RAISE", E.STOP_ITERATION: "STOP_ITERATION"}
    seen = []

    def record(name):
        def cb(code, offset, *args):
            if code is consume.__code__:
                where = "loop"
            elif code.co_name in ("count", "py_count"):
                where = "gen"
            else:
                return
            extra = [type(a).__name__ for a in args if isinstance(a, BaseException)]
            seen.append((name, where, *extra))
        return cb

    with monitoring("test_generators", {e: record(n) for e, n in wanted.items()}):
        total = consume(make, rounds)
    return total, seen


def test_for_loop_events_as_for_def():
    # The end of each inner loop is a STOP_ITERATION event at its END_FOR
    # for a Python generator run by FOR_ITER_GEN; a native one must give
    # the same events (the native frame is sent, not run inline).
    native = loop_events(h.count, 3)
    python = loop_events(py_count, 3)
    assert native == python
    # 3.13t does not specialize: there the generic FOR_ITER ends each loop
    # through tp_iternext, without an event, for both.
    specialized = not sysconfig.get_config_var("Py_GIL_DISABLED")
    stops = native[1].count(("STOP_ITERATION", "loop", "StopIteration"))
    assert stops == (3 if specialized else 0)


def test_generator_states():
    def states(g):
        trace = [(inspect.getgeneratorstate(g), g.gi_running, g.gi_suspended,
                  g.gi_yieldfrom, g.gi_frame is None)]
        for _ in range(3):
            trace.append(outcome(next, g))
            trace.append((inspect.getgeneratorstate(g), g.gi_running,
                          g.gi_suspended, g.gi_yieldfrom, g.gi_frame is None))
        return trace

    native = states(h.count(2))
    assert native == states(py_count(2))
    assert native[-1] == (inspect.GEN_CLOSED, False, False, None, True)


@pytest.mark.parametrize("actions", [
    [("next",), ("send", "ignored"), ("next",), ("next",)],
    [("send", None), ("throw", KeyError("k")), ("next",)],
    [("next",), ("close",), ("next",), ("close",)],
    [("throw", ValueError("early")), ("next",)],
    [("close",), ("next",)],
    [("send", 1)],
])
def test_send_throw_close(actions):
    def apply(g):
        trace = []
        for action in actions:
            if action[0] == "next":
                res = outcome(next, g)
            elif action[0] == "send":
                res = outcome(g.send, action[1])
            elif action[0] == "throw":
                res = outcome(g.throw, action[1])
            else:
                res = outcome(g.close)
            trace.append((res, inspect.getgeneratorstate(g)))
        return trace

    assert apply(h.count(3)) == apply(py_count(3))


def test_gen_fail():
    def consume(g):
        seen = []
        try:
            for x in g:
                seen.append(x)
        except KeyError as e:
            tb = traceback.extract_tb(e.__traceback__)
            return seen, describe(e), inspect.getgeneratorstate(g), tb[-1].name
        return seen, None

    native = consume(h.gen_fail(2, KeyError("k")))
    python = consume(py_gen_fail(2, KeyError("k")))
    assert native[:3] == python[:3]
    assert (native[3], python[3]) == ("gen_fail", "py_gen_fail")


def test_gen_panic():
    g = h.gen_panic(2, "boom")
    assert [next(g), next(g)] == [0, 1]
    with pytest.raises(h.PanicException, match="^boom$"):
        next(g)
    assert inspect.getgeneratorstate(g) == inspect.GEN_CLOSED
    assert outcome(next, g) == ("stop", None)


@pytest.mark.parametrize("finish", ["exhaust", "close", "throw", "del_started",
                                    "del_created", "close_created"])
def test_iterator_dropped(finish):
    before = h.gen_drops()
    g = h.count(5)
    if finish not in ("del_created", "close_created"):
        next(g)
    if finish == "exhaust":
        list(g)
    elif finish in ("close", "close_created"):
        g.close()
    elif finish == "throw":
        with pytest.raises(KeyError):
            g.throw(KeyError)
    else:
        del g
        gc.collect()
    if finish == "close_created":
        # As the locals of a def generator closed before it started: kept
        # until the generator is freed (see the def twin below).
        assert h.gen_drops() == before
        del g
        gc.collect()
    assert h.gen_drops() == before + 1


def test_def_twin_of_close_created_keeps_locals_until_freed():
    freed = []

    class Local:
        def __del__(self):
            freed.append(1)

    def gen(x):
        yield x

    g = gen(Local())
    g.close()
    assert freed == []
    del g
    gc.collect()
    assert freed == [1]


# --- async generators: acount, agen_await, agen_panic -----------------------

def test_acount_is_an_async_generator():
    g = h.acount(3)
    assert type(g) is types.AsyncGeneratorType
    assert inspect.isasyncgen(g)
    assert g.ag_code.co_name == "acount"
    assert g.ag_code.co_flags & (CO_NATIVE | inspect.CO_ASYNC_GENERATOR) == (
        CO_NATIVE | inspect.CO_ASYNC_GENERATOR)
    assert g.ag_frame.f_code is g.ag_code
    assert g.__aiter__() is g
    assert agen_state(g) == (False, False, False, "NoneType")
    assert drive(g.aclose()) == ([], ("stop", None))


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("n", [0, 1, 5])
def test_acount_items(runtime, n):
    async def main(make):
        g = make(n)
        items = [x async for x in g]
        return items, await anext(g, "end"), agen_state(g)

    native = run(runtime, lambda: main(h.acount))
    assert native == run(runtime, lambda: main(py_acount))
    assert native[0] == list(range(n))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_acount_suspends_between_items(runtime):
    # Another task gets to run between two items: acount suspends to the
    # loop, as `await checkpoint()` does.
    async def main(make):
        log = []

        async def ticker():
            for _ in range(20):
                log.append("tick")
                await checkpoint()

        async def consumer():
            async for x in make(3):
                log.append(x)

        if in_trio():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ticker)
                nursery.start_soon(consumer)
        elif runtime.startswith("anyio"):
            async with anyio.create_task_group() as tg:
                tg.start_soon(ticker)
                tg.start_soon(consumer)
        else:
            await asyncio.gather(ticker(), consumer())
        return log

    def between(log):
        items = [i for i, x in enumerate(log) if x != "tick"]
        return [log[a + 1:b].count("tick") for a, b in zip(items, items[1:])]

    native = run(runtime, lambda: main(h.acount))
    python = run(runtime, lambda: main(py_acount))
    assert [x for x in native if x != "tick"] == [0, 1, 2]
    # The same schedule points, so the same interleaving (trio's shuffle is
    # seeded), and the ticker ran while the items were produced.
    assert native == python
    assert sum(between(native)) > 0, native


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_agen_await(runtime):
    # Python awaitables awaited by the Rust stream between yields; the
    # exception of the last one ends the generator.
    async def main(make):
        g = make(value_after_checkpoint("a"), value_after_checkpoint("b"),
                 fail_after_checkpoint(KeyError("k")), NeverAwaited())
        items = []
        try:
            async for x in g:
                items.append(x)
        except KeyError as e:
            error = describe(e)
        return items, error, agen_state(g), await anext(g, "end")

    native = run(runtime, lambda: main(h.agen_await))
    assert native == run(runtime, lambda: main(py_agen_await))
    assert native[0] == ["a", "b"]


def test_agen_await_delegate_is_visible():
    # While the stream awaits, the generator is running and awaits.
    class Step:
        def __await__(self):
            return (yield "suspended")

    results = []
    for g in h.agen_await(Step()), py_agen_await(Step()):
        a = g.asend(None)
        first = a.send(None)
        states = [first, g.ag_running, g.ag_await is not None]
        for other in (g.asend(None), g.athrow(KeyError), g.aclose()):
            states.append(outcome(other.send, None))
        states.append(outcome(a.send, "resumed"))
        states.append(agen_state(g))
        states.append(drive(g.aclose()))
        results.append(states)
    assert results[0] == results[1]
    assert results[0][3:6] == [
        ("raise", RuntimeError,
         "anext(): asynchronous generator is already running"),
        ("raise", RuntimeError,
         "athrow(): asynchronous generator is already running"),
        ("raise", RuntimeError,
         "aclose(): asynchronous generator is already running")]
    assert results[0][6] == ("stop", "resumed")


def test_athrow_and_aclose_at_a_yield():
    def scenario(make):
        trace = []
        g = make(5)
        trace.append(drive(g.asend(None)))
        trace.append(drive(g.athrow(ValueError("v"))))
        trace.append(agen_state(g))
        trace.append(drive(g.asend(None)))
        g = make(5)
        trace.append(drive(g.asend(None)))
        trace.append(drive(g.aclose()))
        trace.append(agen_state(g))
        return trace

    assert scenario(h.acount) == scenario(py_acount)


def test_agen_panic():
    async def main():
        g = h.agen_panic(1, "stream boom")
        items = []
        with pytest.raises(h.PanicException, match="^stream boom$"):
            async for x in g:
                items.append(x)
        return items, agen_state(g)

    assert asyncio.run(main()) == ([0], (False, True, False, "NoneType"))


@pytest.mark.parametrize("finish", ["exhaust", "aclose", "athrow", "break",
                                    "aclose_created", "del_created"])
def test_stream_dropped(finish):
    async def main():
        g = h.acount(3)
        if finish in ("aclose_created", "del_created"):
            if finish == "aclose_created":
                await g.aclose()
            return g
        await anext(g)
        if finish == "exhaust":
            assert [x async for x in g] == [1, 2]
        elif finish == "aclose":
            await g.aclose()
        elif finish == "athrow":
            with pytest.raises(KeyError):
                await g.athrow(KeyError)
        elif finish == "break":
            async for x in g:
                break
            await g.aclose()
        return g

    before = h.gen_drops()
    g = asyncio.run(main())
    if finish == "del_created":
        del g
        gc.collect()
    else:
        assert g.ag_frame is None
    assert h.gen_drops() == before + 1


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_cancelled_while_producing(runtime):
    # The consumer is cancelled while the stream waits at its schedule
    # point: the cancellation goes through the generator, which finishes.
    async def main(make):
        g = make(100)
        items = []
        if runtime == "asyncio":
            async def consume():
                async for x in g:
                    items.append(x)
                    if x == 2:
                        task.cancel()
            task = asyncio.ensure_future(consume())
            try:
                await task
            except asyncio.CancelledError as e:
                error = type(e)
        else:
            cancel_scope = (trio.CancelScope() if runtime == "trio"
                            else anyio.CancelScope())
            error = None
            with cancel_scope:
                async for x in g:
                    items.append(x)
                    if x == 2:
                        cancel_scope.cancel()
            assert cancel_scope.cancelled_caught
        return items, error, agen_state(g)

    before = h.gen_drops()
    native = run(runtime, lambda: main(h.acount))
    assert h.gen_drops() == before + 1
    assert native == run(runtime, lambda: main(py_acount))
    assert native[0] == [0, 1, 2]


# --- asyncgen hooks: the runtime closes a generator left suspended ---------

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_closes_generator_left_open(runtime):
    # asyncio's shutdown_asyncgens() and trio's finalizer close, at the end
    # of the run, an async generator that is still suspended and alive.
    log = []

    async def py_logged(n):
        try:
            async for x in py_acount(n):
                yield x
        finally:
            log.append("closed")

    keep = []

    async def main(make):
        g = make(5)
        async for x in g:
            break
        keep.append(g)
        return x

    before = h.gen_drops()
    assert run(runtime, lambda: main(h.acount)) == 0
    native = keep.pop()
    assert agen_state(native) == (False, True, False, "NoneType")
    assert h.gen_drops() == before + 1

    assert run(runtime, lambda: main(py_logged)) == 0
    assert agen_state(keep.pop()) == agen_state(native)
    assert log == ["closed"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_finalizes_collected_generator(runtime):
    # A suspended async generator collected while the loop runs goes to
    # the runtime's finalizer hook, which closes it (asyncio: a task
    # running aclose(); trio: the system nursery).
    log = []

    async def py_logged(n):
        try:
            async for x in py_acount(n):
                yield x
        finally:
            log.append("closed")

    async def main(make, closed):
        g = make(5)
        first = await anext(g)
        del g
        gc.collect()
        # The runtime closes it soon, while the run goes on.
        for ticks in range(100):
            if closed():
                return first, True
            await checkpoint()
        return first, False

    before = h.gen_drops()
    assert run(runtime, lambda: main(
        h.acount, lambda: h.gen_drops() == before + 1)) == (0, True)
    assert run(runtime, lambda: main(py_logged, lambda: log)) == (0, True)
    assert log == ["closed"]


def test_hooks_see_native_generator():
    calls = []
    old = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(
        firstiter=lambda g: calls.append(("firstiter", g.__name__)),
        finalizer=lambda g: calls.append(("finalizer", g.__name__)))
    try:
        for make in (h.acount, py_acount):
            g = make(2)
            assert drive(g.asend(None)) == ([None], ("stop", 0))
            del g
            gc.collect()
    finally:
        sys.set_asyncgen_hooks(*old)
    assert calls == [("firstiter", "acount"), ("finalizer", "acount"),
                     ("firstiter", "py_acount"), ("finalizer", "py_acount")]
