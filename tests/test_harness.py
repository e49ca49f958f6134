"""Differential tests of the Rust harness, seen from Python.

Every scenario is written twice, once with a native coroutine from the
``pycoro_harness`` probe extension and once as the ``async def`` twin that
its doc comment gives, driven the same way (``asyncio.run`` or a bare
``send(None)`` loop), and the two outcomes (result, exception type and
message, ``__context__``, yields, states, warnings) must be equal.
"""

import asyncio
import gc
import inspect
import os
import subprocess
import sys
import sysconfig
import traceback
import types
import warnings
import weakref

import pytest

import pycoro_harness as h
from compare import describe_exc, send_loop_trace
from loops import py_await_, py_await_all, py_catch  # runtime-independent twins

CO_NATIVE = 0x10000000


# --- async def twins of the probe's functions ---------------------------

async def py_ready(value):
    return value


async def py_fail(exc):
    raise exc


async def py_yield_now(n):
    for _ in range(n):
        await asyncio.sleep(0)
    return n


async def py_sleep(seconds, result=None):
    return await asyncio.sleep(seconds, result)


async def py_hold(obj):
    await asyncio.sleep(0)
    return obj


TWINS = {
    h.ready: py_ready,
    h.fail: py_fail,
    h.yield_now: py_yield_now,
    h.sleep: py_sleep,
    h.await_: py_await_,
    h.await_all: py_await_all,
    h.catch: py_catch,
    h.hold: py_hold,
}


# --- drivers --------------------------------------------------------------

def run_asyncio(make):
    """asyncio.run(make()): outcome."""
    try:
        return ("return", asyncio.run(make()))
    except BaseException as e:
        return ("raise", describe_exc(e))


def both(native_fn, *args):
    """(native coroutine, async def twin coroutine) for the same call."""
    return native_fn(*args), TWINS[native_fn](*args)


@types.coroutine
def suspend_once(value="suspended"):
    """A minimal awaitable: yields once, returns what was sent."""
    sent = yield value
    return ("sent", sent)


async def raise_in_except():
    try:
        raise KeyError("inner")
    except KeyError:
        raise ValueError("outer")


# --- identity ---------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: h.ready(1),
    lambda: h.fail(ValueError()),
    lambda: h.yield_now(1),
    lambda: h.sleep(0),
    lambda: h.await_(suspend_once()),
    lambda: h.await_all(),
    lambda: h.catch(suspend_once(), Exception),
    lambda: h.hold(object()),
])
def test_is_a_true_coroutine(make):
    c = make()
    try:
        assert type(c) is types.CoroutineType
        assert inspect.iscoroutine(c)
        assert inspect.isawaitable(c)
        assert isinstance(c, __import__("collections.abc").abc.Coroutine)
        assert c.cr_code.co_flags & inspect.CO_COROUTINE
        assert c.cr_code.co_flags & CO_NATIVE
        assert c.cr_frame is not None and c.cr_frame.f_code is c.cr_code
        assert c.cr_code.co_filename.endswith("rust-harness/pycoro_harness/src/lib.rs")
        assert c.__name__ == c.cr_code.co_name
        assert c.cr_frame.f_globals is h.__dict__
        assert not c.cr_running
        assert inspect.getcoroutinestate(c) == "CORO_CREATED"
    finally:
        c.close()


def test_code_object_points_at_the_rust_source():
    c = h.ready(1)
    c.close()
    code = c.cr_code
    with open(code.co_filename) as f:
        lines = f.read().splitlines()
    # co_firstlineno is the `fn` line (the span comes from the probe's
    # build script, see tests/test_frames.py); `ready` is a
    # `pycoro::coroutine_fn!`, whose `fn` is inside the macro call.
    assert lines[code.co_firstlineno - 1].strip().startswith("fn ready(")
    span = [line for _, _, line in code.co_lines()]
    assert any("async move { Ok(value) }" in lines[n - 1] for n in span)
    assert "coroutine_fn!" in lines[code.co_firstlineno - 3]
    assert code.co_qualname == "ready"
    # The same code object for every call (one per native def).
    other = h.ready(2)
    other.close()
    assert other.cr_code is code


# --- results and exceptions ---------------------------------------------

VALUES = [None, 0, "text", (1, 2), object()]


@pytest.mark.parametrize("value", VALUES)
def test_ready_send_loop(value):
    native, twin = both(h.ready, value)
    assert send_loop_trace(native) == send_loop_trace(twin) == ([], ("return", value))


@pytest.mark.parametrize("value", VALUES)
def test_ready_asyncio(value):
    assert run_asyncio(lambda: h.ready(value)) == run_asyncio(lambda: py_ready(value))


EXCEPTIONS = [
    lambda: ValueError("boom"),
    lambda: KeyError("k"),
    lambda: ValueError,              # a class: raised as an instance
    lambda: OSError(2, "No such file"),
    lambda: StopIteration("x"),      # PEP 479: RuntimeError
    lambda: KeyboardInterrupt(),
    lambda: asyncio.CancelledError(),
]


@pytest.mark.parametrize("make_exc", EXCEPTIONS)
def test_fail_send_loop(make_exc):
    n = send_loop_trace(h.fail(make_exc()))
    p = send_loop_trace(py_fail(make_exc()))
    assert n == p


@pytest.mark.parametrize("make_exc", EXCEPTIONS)
def test_fail_asyncio(make_exc):
    assert run_asyncio(lambda: h.fail(make_exc())) == run_asyncio(lambda: py_fail(make_exc()))


def test_fail_raises_the_same_object():
    exc = ValueError("identity")
    for c in both(h.fail, exc):
        with pytest.raises(ValueError) as info:
            c.send(None)
        assert info.value is exc


def test_fail_inside_except_gets_context_like_async_def():
    async def outer(make):
        try:
            raise KeyError("being handled")
        except KeyError:
            return await make(ValueError("raised"))
    assert run_asyncio(lambda: outer(h.fail)) == run_asyncio(lambda: outer(py_fail))
    kind, (typ, msg, args, ctx, cause, group) = run_asyncio(lambda: outer(h.fail))
    assert ctx[:2] == (KeyError, "'being handled'")


def test_awaited_exception_propagates_unchanged():
    # raise_in_except sets __context__ inside itself; passing through the
    # native await must not rewrite it.
    assert run_asyncio(lambda: h.await_(raise_in_except())) == run_asyncio(
        lambda: py_await_(raise_in_except()))
    _, (typ, msg, _, ctx, _, _) = run_asyncio(lambda: h.await_(raise_in_except()))
    assert (typ, msg, ctx[:2]) == (ValueError, "outer", (KeyError, "'inner'"))


def test_cause_is_kept():
    def make():
        e = ValueError("with cause")
        e.__cause__ = KeyError("cause")
        return e
    assert send_loop_trace(h.fail(make())) == send_loop_trace(py_fail(make()))


# --- suspension -------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 5])
def test_yield_now_send_loop(n):
    native, twin = both(h.yield_now, n)
    assert send_loop_trace(native) == send_loop_trace(twin) == ([None] * n, ("return", n))


@pytest.mark.parametrize("n", [0, 3])
def test_yield_now_asyncio(n):
    assert run_asyncio(lambda: h.yield_now(n)) == run_asyncio(lambda: py_yield_now(n))


def test_yield_now_interleaves_like_async_def():
    async def main(fn):
        order = []

        async def tagged(tag):
            await fn(2)
            order.append(tag)
        await asyncio.gather(tagged("a"), tagged("b"), tagged("c"))
        return order
    assert run_asyncio(lambda: main(h.yield_now)) == run_asyncio(lambda: main(py_yield_now))


@pytest.mark.parametrize("seconds", [0, 0.02])
def test_sleep_asyncio(seconds):
    loop_time = []

    def timed(fn):
        async def main():
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            r = await fn(seconds, "result")
            loop_time.append(loop.time() - t0)
            return r
        return main
    assert run_asyncio(timed(h.sleep)) == run_asyncio(timed(py_sleep)) == ("return", "result")
    assert loop_time[0] >= seconds * 0.9


def test_sleep_does_not_block_the_loop():
    async def main():
        ticks = 0
        task = asyncio.ensure_future(h.sleep(0.05, "done"))
        while not task.done():
            ticks += 1
            await asyncio.sleep(0.005)
        return await task, ticks
    result, ticks = asyncio.run(main())
    assert result == "done"
    assert ticks >= 3


def test_many_sleeps_concurrently():
    async def main(fn):
        return await asyncio.gather(*(fn(0.01 * (i % 3), i) for i in range(30)))
    assert run_asyncio(lambda: main(h.sleep)) == run_asyncio(lambda: main(py_sleep))


def test_sleep_in_a_bare_send_loop_yields_none_until_woken():
    yielded, outcome = send_loop_trace(h.sleep(0.01, "late"), limit=10_000_000)
    assert outcome == ("return", "late")
    assert set(yielded) <= {None}


# --- awaiting Python awaitables from Rust --------------------------------

AWAITABLES = [
    lambda: py_ready("coroutine"),
    lambda: h.ready("native coroutine"),
    lambda: asyncio.sleep(0, "asyncio.sleep"),
    lambda: py_fail(KeyError("from awaited")),
    lambda: h.fail(KeyError("from awaited native")),
    lambda: raise_in_except(),
    lambda: h.sleep(0.01, "native sleep"),
    lambda: h.yield_now(3),
    lambda: 42,                               # not awaitable: TypeError
]


@pytest.mark.parametrize("make", AWAITABLES)
def test_await_asyncio(make):
    assert run_asyncio(lambda: h.await_(make())) == run_asyncio(lambda: py_await_(make()))


@pytest.mark.parametrize("make", AWAITABLES)
def test_await_send_loop(make):
    n = send_loop_trace(h.await_(make()), limit=10_000_000)
    p = send_loop_trace(py_await_(make()), limit=10_000_000)
    if make is AWAITABLES[6]:
        # A Rust-thread timer in a bare loop: the number of busy-poll
        # yields depends on timing, the outcome does not.
        assert n[1] == p[1]
    else:
        assert n == p


def test_await_future_resolved_later():
    def main(fn):
        async def run():
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            loop.call_later(0.01, fut.set_result, "from the future")
            return await fn(fut)
        return run
    assert run_asyncio(main(h.await_)) == run_asyncio(main(py_await_)) == (
        "return", "from the future")


def test_values_sent_through_an_await():
    native, twin = h.await_(suspend_once("out")), py_await_(suspend_once("out"))
    results = []
    for c in (native, twin):
        assert c.send(None) == "out"
        assert c.cr_await is not None
        with pytest.raises(StopIteration) as info:
            c.send("in")
        results.append(info.value.value)
    assert results == [("sent", "in")] * 2


def test_cr_await_is_the_delegate():
    for c in (h.await_(suspend_once()), py_await_(suspend_once())):
        assert c.cr_await is None
        c.send(None)
        assert inspect.isgenerator(c.cr_await)
        assert inspect.getcoroutinestate(c) == "CORO_SUSPENDED"
        c.close()


def test_awaiting_an_already_awaited_coroutine():
    async def main(fn):
        inner = py_yield_now(1)
        t1 = asyncio.ensure_future(fn(inner))
        await asyncio.sleep(0)
        try:
            return await fn(inner)
        finally:
            await t1
    assert run_asyncio(lambda: main(h.await_)) == run_asyncio(lambda: main(py_await_))


@pytest.mark.parametrize("aws", [
    [],
    [lambda: py_ready(1), lambda: h.ready(2), lambda: h.sleep(0.01, 3)],
    [lambda: py_ready(1), lambda: py_fail(ValueError("second")), lambda: py_ready(3)],
])
def test_await_all(aws):
    # After a failure the awaitables left are never awaited: each warns as
    # it is released, for the native coroutine as for async def.
    def run(fn):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outcome = run_asyncio(lambda: fn(*(a() for a in aws)))
            gc.collect()
        return outcome, [(w.category, str(w.message)) for w in caught]
    assert run(h.await_all) == run(py_await_all)


@pytest.mark.parametrize("make, exc_type", [
    (lambda: py_fail(ValueError("caught")), ValueError),
    (lambda: py_fail(ValueError("not caught")), KeyError),
    (lambda: py_ready("no error"), ValueError),
    (lambda: h.fail(KeyError("native")), LookupError),
])
def test_catch(make, exc_type):
    def norm(outcome):
        kind, v = outcome
        return (kind, describe_exc(v) if isinstance(v, BaseException) else v)
    assert norm(run_asyncio(lambda: h.catch(make(), exc_type))) == norm(
        run_asyncio(lambda: py_catch(make(), exc_type)))


# --- throw, close, cancellation -----------------------------------------

@pytest.mark.parametrize("exc_type", [ValueError, GeneratorExit, asyncio.CancelledError])
def test_throw_while_awaiting_python(exc_type):
    outcomes = []
    for c in (h.catch(suspend_once(), ValueError), py_catch(suspend_once(), ValueError)):
        c.send(None)
        try:
            c.throw(exc_type("thrown"))
        except StopIteration as e:
            outcomes.append(("return", describe_exc(e.value)))
        except BaseException as e:
            outcomes.append(("raise", describe_exc(e)))
        outcomes.append(inspect.getcoroutinestate(c))
    assert outcomes[:2] == outcomes[2:]


def test_throw_into_a_created_coroutine():
    outcomes = []
    for c in both(h.ready, 1):
        with pytest.raises(ValueError, match="early"):
            c.throw(ValueError("early"))
        outcomes.append(inspect.getcoroutinestate(c))
    assert outcomes == ["CORO_CLOSED"] * 2


@pytest.mark.parametrize("when", ["created", "suspended"])
def test_close_like_async_def(when):
    states = []
    for c in both(h.yield_now, 3):
        if when == "suspended":
            c.send(None)
        assert c.close() is None
        states.append(inspect.getcoroutinestate(c))
        with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
            c.send(None)
    assert states == ["CORO_CLOSED"] * 2


def test_close_runs_the_futures_drop():
    before = h.drops()
    c = h.pending()
    assert c.send(None) is None       # no loop: a bare yield
    assert h.drops() == before
    c.close()
    assert h.drops() == before + 1
    assert inspect.getcoroutinestate(c) == "CORO_CLOSED"


def test_close_while_awaiting_python_closes_the_delegate_then_drops():
    closed = []

    @types.coroutine
    def delegate():
        try:
            yield "waiting"
        finally:
            closed.append(True)
    before = h.drops()
    c = h.guarded(delegate())
    assert c.send(None) == "waiting"
    c.close()
    assert closed == [True]
    assert h.drops() == before + 1


def test_dealloc_of_a_suspended_coroutine_drops_the_future():
    before = h.drops()
    c = h.pending()
    c.send(None)
    del c
    gc.collect()
    assert h.drops() == before + 1


def test_cancel_during_rust_sleep():
    def main(fn):
        async def run():
            task = asyncio.ensure_future(fn(3600, None))
            await asyncio.sleep(0.01)
            task.cancel("stop")
            try:
                await task
            except asyncio.CancelledError as e:
                return ("cancelled", e.args)
            return "not cancelled"
        return run
    assert run_asyncio(main(h.sleep)) == run_asyncio(main(py_sleep))


def test_cancel_reaches_the_rust_future_awaiting_python():
    def main(fn):
        async def run():
            task = asyncio.ensure_future(fn(asyncio.sleep(3600), asyncio.CancelledError))
            await asyncio.sleep(0.01)
            task.cancel("stop")
            caught = await task
            return type(caught), caught.args
        return run
    assert run_asyncio(main(h.catch)) == run_asyncio(main(py_catch)) == (
        "return", (asyncio.CancelledError, ("stop",)))


def test_wait_for_timeout():
    def main(fn):
        async def run():
            try:
                await asyncio.wait_for(fn(3600, None), 0.01)
            except TimeoutError as e:
                return type(e)
        return run
    assert run_asyncio(main(h.sleep)) == run_asyncio(main(py_sleep))


# --- CPython's own coroutine rules --------------------------------------

def test_cannot_reuse_a_finished_coroutine():
    msgs = []
    for c in both(h.ready, 1):
        with pytest.raises(StopIteration):
            c.send(None)
        with pytest.raises(RuntimeError) as info:
            c.send(None)
        msgs.append(str(info.value))
    assert msgs == ["cannot reuse already awaited coroutine"] * 2


def test_cannot_send_non_none_to_a_just_started_coroutine():
    msgs = []
    for c in both(h.ready, 1):
        with pytest.raises(TypeError) as info:
            c.send(1)
        msgs.append(str(info.value))
        c.close()
    assert msgs[0] == msgs[1]


def test_never_awaited_warning():
    msgs = []
    for fn in (h.ready, py_ready):
        c = fn(1)
        name = c.__qualname__
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            del c
            gc.collect()
        msgs.append([(x.category, str(x.message).replace(name, "NAME")) for x in w])
        del w
    assert msgs[0] == msgs[1]
    assert msgs[0] == [(RuntimeWarning, "coroutine 'NAME' was never awaited")]


def test_await_itself_is_refused():
    outcomes = []
    for fn in (h.await_, py_await_):
        holder = []

        async def indirect():
            return await holder[0]
        c = fn(indirect())
        holder.append(c)
        outcomes.append(send_loop_trace(c))
    assert outcomes[0] == outcomes[1]


def test_states_follow_async_def():
    seen = []
    for c in both(h.yield_now, 1):
        states = [inspect.getcoroutinestate(c)]
        c.send(None)
        states.append(inspect.getcoroutinestate(c))
        with pytest.raises(StopIteration):
            c.send(None)
        states.append(inspect.getcoroutinestate(c))
        seen.append(states)
    assert seen[0] == seen[1] == ["CORO_CREATED", "CORO_SUSPENDED", "CORO_CLOSED"]


# --- panics ---------------------------------------------------------------

def test_panic_is_panic_exception():
    PanicException = sys.modules["pyo3_runtime"].PanicException
    assert h.PanicException is PanicException
    assert issubclass(PanicException, BaseException)
    assert not issubclass(PanicException, Exception)
    c = h.panic("a Rust panic")
    with pytest.raises(PanicException, match="^a Rust panic$"):
        c.send(None)
    with pytest.raises(RuntimeError, match="cannot reuse"):
        c.send(None)
    # The interpreter survives and keeps running native coroutines.
    assert run_asyncio(lambda: h.ready("alive")) == ("return", "alive")


PANIC_TYPE_FOUND = r"""
import sys, types
runtime = types.ModuleType("pyo3_runtime")
class PanicException(BaseException):
    pass
runtime.PanicException = {value}
sys.modules["pyo3_runtime"] = runtime
try:
    import pycoro_harness as h
except TypeError as e:
    print("TypeError", e)
    raise SystemExit
assert h.PanicException is PanicException
try:
    h.panic("boom").send(None)
except PanicException as e:
    print("caught", type(e).__qualname__, e)
"""


def test_without_the_api_the_module_loads_and_creation_is_a_runtime_error():
    # pycoro-ffi finds the C functions at run time: on a stock CPython
    # (simulated here with PYCORO_NATIVE_FRAMES=0, read once by pycoro-ffi)
    # the extension imports, and only making a native object fails.
    code = ("import pycoro_harness as h\n"
            "try:\n    h.ready(1)\nexcept RuntimeError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYCORO_NATIVE_FRAMES": "0"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("this interpreter has no native frames API")


@pytest.mark.parametrize("value, expected", [
    ("PanicException", "caught PanicException boom"),
    ("42", "TypeError sys.modules['pyo3_runtime'].PanicException is not a subclass of BaseException"),
])
def test_panic_exception_found_in_sys_modules(value, expected):
    # Whoever comes first (PyO3 with pyo3-patches/, another copy of the
    # harness) registers the type; a later extension takes it as it is, and
    # refuses what is not an exception type rather than replace it.
    out = subprocess.run([sys.executable, "-c", PANIC_TYPE_FOUND.format(value=value)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


def test_panic_under_asyncio():
    with pytest.raises(h.PanicException, match="in a task"):
        asyncio.run(h.panic("in a task"))
    assert asyncio.run(h.sleep(0, "still fine")) == "still fine"


def test_panic_is_not_caught_by_except_exception():
    async def main():
        try:
            await h.panic("escapes")
        except Exception:
            return "swallowed"
    with pytest.raises(h.PanicException):
        asyncio.run(main())


# --- tracebacks -------------------------------------------------------------

def traceback_shape(make):
    try:
        asyncio.run(make())
    except BaseException as e:
        frames = traceback.extract_tb(e.__traceback__)
        return type(e), [f.name for f in frames], frames[-1]
    raise AssertionError("no exception")


def test_traceback_has_the_native_frame():
    n_type, n_names, n_last = traceback_shape(lambda: h.fail(ValueError("tb")))
    p_type, p_names, p_last = traceback_shape(lambda: py_fail(ValueError("tb")))
    assert n_type is p_type
    assert n_names[:-1] == p_names[:-1]
    assert (n_names[-1], p_names[-1]) == ("fail", "py_fail")
    assert n_last.filename.endswith("rust-harness/pycoro_harness/src/lib.rs")
    assert 'coroutine_def!("fail")' in n_last.line


def test_traceback_through_a_native_await():
    n_type, n_names, n_last = traceback_shape(lambda: h.await_(py_fail(KeyError("deep"))))
    p_type, p_names, p_last = traceback_shape(lambda: py_await_(py_fail(KeyError("deep"))))
    assert n_type is p_type
    assert n_names[-1] == p_names[-1] == "py_fail"
    assert n_names[-2:-1] == ["await_"] and p_names[-2:-1] == ["py_await_"]
    assert len(n_names) == len(p_names)


def test_suspended_frame_reports_the_await_line():
    c = h.await_(suspend_once())
    c.send(None)
    code = c.cr_code
    with open(code.co_filename) as f:
        line = f.read().splitlines()[c.cr_frame.f_lineno - 1]
    assert "py_await(" in line
    c.close()


def test_caller_frame_is_the_native_frame():
    seen = []

    async def probe():
        seen.append(sys._getframe(1).f_code.co_name)
        seen.append(sys._getframe(1).f_code.co_flags & CO_NATIVE)
    asyncio.run(h.await_(probe()))
    # The awaited coroutine runs under the native frame's await.
    assert seen == ["await_", CO_NATIVE]


# --- GC -----------------------------------------------------------------------

def test_held_object_cycle_is_collected():
    class Box:
        pass
    box = Box()
    c = h.hold(box)
    assert box in gc.get_referents(c)
    box.coro = c
    ref = weakref.ref(box)
    del box, c
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        gc.collect()
    assert ref() is None


def test_hold_returns_the_object():
    obj = object()
    assert run_asyncio(lambda: h.hold(obj)) == run_asyncio(lambda: py_hold(obj)) == (
        "return", obj)


# --- deep chains ------------------------------------------------------------

def run_chain_script(body, recursion_limit=None, stock_only=False):
    """Run `body` in a fresh interpreter (a crash is a result, not the end
    of the test run): its exit code and the last line it printed.

    ``stock_only``: `body` runs no native frame (an ``async def`` twin), so
    an UndefinedBehaviorSanitizer report in it is stock CPython's and is
    printed without ending the process.  Under scripts/sanitize
    (``halt_on_error=1``) the twin of the deep chain otherwise dies of the
    stock ``Parser/lexer/buffer.c:30`` report, which the traceback printer's
    tokenizer makes while it shows the never-awaited coroutines'
    ``RecursionError``.
    """
    import os
    import subprocess
    import textwrap
    prelude = "import sys, asyncio\nimport pycoro_harness as h\n"
    prelude += "from loops import py_await_\n"
    if recursion_limit is not None:
        prelude += f"sys.setrecursionlimit({recursion_limit})\n"
    env = dict(os.environ)
    if stock_only and "UBSAN_OPTIONS" in env:
        # A later flag overrides an earlier one of the same name.
        env["UBSAN_OPTIONS"] += ":halt_on_error=0:abort_on_error=0"
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(body)],
        cwd=os.path.dirname(__file__), env=env,
        capture_output=True, text=True, timeout=300)
    lines = proc.stdout.strip().splitlines()
    return proc.returncode, (lines[-1] if lines else proc.stderr[-2000:])


CHAIN_FREE = """
    def chain(make_leaf, wrap, n):
        c = make_leaf()
        for _ in range(n):
            c = wrap(c)
        return c
    c = chain(lambda: {leaf}, {wrap}, {n})
    del c
    print("freed")
"""


@pytest.mark.parametrize("n", [20_000, 100_000])
def test_freeing_a_deep_chain_of_never_run_coroutines(n):
    # Each never-started coroutine holds the next; freeing the outermost
    # frees them all, one inside the other's deallocation.  A native chain
    # must free at any depth (its dealloc goes through the trashcan, which
    # bounds the nesting).  async def's dealloc has no trashcan: it frees a
    # chain as deep as the C stack allows, about 100,000 (not 200,000)
    # with the GIL and fewer than 100,000 on the free-threaded build, whose
    # every level takes more stack, so the twin is compared at 20,000 only.
    native = run_chain_script(CHAIN_FREE.format(leaf="h.ready(1)", wrap="h.await_", n=n))
    assert native == (0, "freed")
    if n <= 20_000:
        twin = run_chain_script(CHAIN_FREE.format(leaf="py_await_(None)", wrap="py_await_", n=n),
                                stock_only=True)
        assert native == twin


CHAIN_RUN = """
    import warnings
    warnings.simplefilter("ignore")
    async def main():
        c = {leaf}
        for _ in range({n}):
            c = {wrap}(c)
        try:
            return await c
        except RecursionError:
            return "RecursionError"
    print(asyncio.run(main()))
"""


@pytest.mark.parametrize("limit", [None, 1_000_000])
def test_running_a_deep_chain_ends_in_recursion_error(limit):
    # 50,000 coroutines each awaiting the next: async def raises
    # RecursionError at the default limit and runs it at a raised one
    # (its awaits take no C stack); a native chain takes C stack at every
    # level, and must end in RecursionError, never a crash, at any limit.
    n = 50_000
    native = run_chain_script(CHAIN_RUN.format(leaf="h.ready(1)", wrap="h.await_", n=n), limit)
    assert native == (0, "RecursionError")
    # The twin's RecursionError leaves ~50,000 never-run async def
    # coroutines, each freed inside the previous one's deallocation (stock
    # coroutines have no trashcan): under AddressSanitizer's larger frames
    # that overflows the C stack of stock CPython (scripts/sanitize; 20,000
    # is freed there), so an ASan build runs the twin at 20,000.
    asan = "--with-address-sanitizer" in (sysconfig.get_config_var("CONFIG_ARGS") or "")
    twin_n = 20_000 if asan else n
    twin = run_chain_script(CHAIN_RUN.format(leaf="py_ready(1)", wrap="py_await_", n=twin_n).replace(
        "async def main", "async def py_ready(v):\n        return v\n    async def main"), limit,
        stock_only=True)
    assert twin == (0, "RecursionError" if limit is None else "1")


@pytest.mark.skipif(hasattr(sys, "gettotalrefcount"),
                    reason="gh-152685: a --with-pydebug build aborts here for async def too")
def test_stopiteration_thrown_before_the_start_escapes_as_for_async_def():
    # gh-152685 (open upstream): 3.13 lets StopIteration thrown into a
    # coroutine that has not started escape unconverted (PEP 479's handler
    # does not cover the frame's prologue), and a debug build's
    # gen_send_ex2() asserts it never does.  A native frame behaves as the
    # async def does: the same exception, closed afterwards.
    async def py_ready(v):
        return v

    for make in (lambda: h.ready(2), lambda: py_ready(2)):
        c = make()
        with pytest.raises(StopIteration) as info:
            c.throw(StopIteration("thrown"))
        assert info.value.args == ("thrown",)
        assert info.value.__context__ is None
        assert inspect.getcoroutinestate(c) == "CORO_CLOSED"


# --- interpreter finalization -------------------------------------------------

FINALIZING = r"""
import pycoro_harness as h
# Suspended native coroutines and a generator left in __main__'s globals
# are closed and freed by finalize_modules(), after Py_IsFinalizing() is
# true: pyo3's Python::try_attach refuses then, and the step and clear
# callbacks must still run (GeneratorExit, Drop) without a panic, an abort
# or an unraisable error.
keep = []
for _ in range(3):
    c = h.sleep(3600, None)
    c.send(None)
    keep.append(c)
p = h.pending()
p.send(None)
keep.append(p)
g = h.count(5)
next(g)
keep.append(g)
print("ok", flush=True)
"""


def test_coroutines_freed_while_the_interpreter_finalizes():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(h.__file__), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", FINALIZING], env=env,
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "ok\n", "")
