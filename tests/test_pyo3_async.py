"""PyO3's own ``#[pyfunction] async fn``, as a maturin package, gives true
coroutines.

``pyo3_async_example`` is examples/pyo3-async, built with the patched PyO3's
``native-coroutines`` feature by ``scripts/build-example`` (and installed
into this venv).  Every scenario is also written as the ``async def`` twin
that the Rust function's doc comment gives, run the same way under every
runtime of ``loops.RUNTIMES`` (asyncio, uvloop, trio, anyio on both
backends, a bare send loop) with ``loops.run``, and the two outcomes
(results, exceptions with their ``__context__``, warnings) must be equal.

The same wheel installed into a venv of the unpatched interpreter
(``scripts/build-example --pristine``) must import there and fall back to
PyO3's own ``Coroutine``: ``test_pristine_*`` run it in a subprocess.
"""

import asyncio
import hashlib
import inspect
import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import traceback
import types

import pytest

try:
    import pyo3_async_example as ex
except ImportError as e:
    pytest.skip(f"pyo3_async_example is not installed ({e}); scripts/build-example "
                "builds and installs it", allow_module_level=True)

import loops
from loops import RUNTIMES, frozen_heap  # noqa: F401 - the fixture, used by loops.run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB_RS = os.path.join(REPO, "examples", "pyo3-async", "src", "lib.rs")
BUILD_DIR = os.environ.get("PYCORO_BUILD_DIR") or os.path.join(REPO, "build")
# The file the frames name: the example's lib.rs, or, when PYCORO_BUILD_DIR
# moves the build directory, the copy scripts/build-example builds there.
if os.path.realpath(BUILD_DIR) == os.path.realpath(os.path.join(REPO, "build")):
    BUILT_LIB_RS = os.path.realpath(LIB_RS)
else:
    BUILT_LIB_RS = os.path.realpath(os.path.join(BUILD_DIR, "example-src", "pyo3-async", "src",
                                                 "lib.rs"))
PRISTINE_PY = os.path.join(BUILD_DIR, "venv-pristine", "bin", "python")
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def fn_line(name):
    """The line of ``async fn NAME`` in the example's lib.rs."""
    with open(LIB_RS) as f:
        for i, line in enumerate(f, 1):
            if line.startswith(f"async fn {name}("):
                return i
    raise AssertionError(f"no `async fn {name}(` in {LIB_RS}")


# --- async def twins of the example's functions (its doc comments) --------

async def py_ready(value):
    return value


async def py_sleep(seconds, value):
    await loops.sleep(seconds)
    return value


async def py_yield_now(n):
    for _ in range(n):
        await loops.checkpoint()
    return n


async def py_fail(message):
    raise ValueError(message)


async def py_await_py(awaitable):
    return await awaitable


async def py_call(callable):
    return callable()


async def py_cancellable_sleep(seconds, value):
    try:
        await loops.sleep(seconds)
    except BaseException as e:
        return e
    return value


NAMES = ["ready", "sleep", "yield_now", "fail", "await_py", "call", "cancellable_sleep"]
NATIVE = types.SimpleNamespace(**{n: getattr(ex, n) for n in NAMES})
TWIN = types.SimpleNamespace(**{n: globals()["py_" + n] for n in NAMES})


def compare(runtime, program):
    """Run ``program(ops)`` with the native functions and with their twins
    under ``runtime``; the two outcomes must be equal.  Returns the
    native outcome."""
    def unprefixed(result):
        # Warnings name the coroutine ("coroutine 'py_x' was never
        # awaited"): compare without the twins' prefix.
        outcome, reports = result
        return outcome, [(k, c, m.replace("'py_", "'")) for k, c, m in reports]
    native = unprefixed(loops.run(runtime, lambda: program(NATIVE)))
    twin = unprefixed(loops.run(runtime, lambda: program(TWIN)))
    assert native == twin
    return native


# --- the type ----------------------------------------------------------------

@pytest.mark.parametrize("name,args", [
    ("ready", (1,)), ("sleep", (0, 1)), ("yield_now", (1,)), ("fail", ("x",)), ("await_py", (None,)),
    ("call", (None,)), ("panic", ("x",)), ("cancellable_sleep", (0, 1)),
])
def test_async_fn_returns_a_true_coroutine(name, args):
    c = getattr(ex, name)(*args)
    try:
        assert type(c) is types.CoroutineType
        assert inspect.iscoroutine(c) and inspect.isawaitable(c)
        assert inspect.getcoroutinestate(c) == inspect.CORO_CREATED
        assert c.__name__ == name and c.__qualname__ == name
        assert c.cr_code.co_name == name
        assert c.cr_code.co_flags & inspect.CO_COROUTINE
        assert c.cr_frame.f_code is c.cr_code
    finally:
        c.close()
    assert inspect.getcoroutinestate(c) == inspect.CORO_CLOSED


@pytest.mark.skipif(not FREE_THREADED, reason="the GIL is only off on the free-threaded build")
def test_import_keeps_the_gil_off():
    # `#[pymodule(gil_used = false)]`: importing the module (done above)
    # did not turn the GIL back on.
    assert not sys._is_gil_enabled()


def test_frame_is_the_rs_file():
    c = ex.fail("x")
    try:
        assert os.path.realpath(c.cr_code.co_filename) == BUILT_LIB_RS
        assert c.cr_code.co_firstlineno == fn_line("fail")
        assert c.cr_code.co_varnames == ("message",) and c.cr_code.co_argcount == 1
    finally:
        c.close()


# --- outcomes against the twins, under every runtime ------------------------

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_ready(runtime):
    async def program(ops):
        return [await ops.ready(42), await ops.ready("x")]
    assert compare(runtime, program)[0] == ("return", [42, "x"])


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_sleep_woken_by_a_rust_thread(runtime):
    async def program(ops):
        # Concurrently: the shorter sleep ends first (its value is
        # recorded first), both after their time.
        order = []

        async def one(seconds, value):
            order.append(await ops.sleep(seconds, value))
            return value
        t0 = loops.time.monotonic()
        results = await loops.gather(one(0.06, "long"), one(0.02, "short"))
        # Only the Rust timer's duration is checked: the twin's
        # asyncio.sleep() under uvloop counts from the loop's cached clock
        # (libuv's uv_now(), taken at the start of the iteration), so on a
        # loaded machine it ends before 0.06 s of time.monotonic() (a CI
        # run failed so: True against False).
        return results, order, ops is TWIN or loops.time.monotonic() - t0 >= 0.06
    assert compare(runtime, program)[0] == ("return", (["long", "short"], ["short", "long"], True))


@types.coroutine
def counting(coro, counter):
    """``await coro``, counting the times it suspends its runner."""
    try:
        value = coro.send(None)
        while True:
            counter.append(1)
            try:
                sent = yield value
            except BaseException as e:  # noqa: BLE001 - passed on
                value = coro.throw(e)
            else:
                value = coro.send(sent)
    except StopIteration as e:
        return e.value


@pytest.mark.parametrize("runtime", [r for r in RUNTIMES if r != "send"])
def test_sleep_waits_without_polling(runtime):
    """Under an event loop, the coroutine sleeps until the Rust thread wakes
    it: it suspends its task once (as the twin does), it is not polled
    again and again meanwhile (in a bare send loop, where nothing can wake
    it, it yields thousands of times, as the twin does there)."""
    async def program(ops):
        counter = []
        value = await counting(ops.sleep(0.1, "slept"), counter)
        return value, len(counter)
    assert compare(runtime, program)[0] == ("return", ("slept", 1))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_yield_now(runtime):
    async def program(ops):
        # Two coroutines that yield in turn: their steps interleave.
        log = []

        async def one(name, n):
            for i in range(n):
                log.append((name, i))
                await ops.yield_now(1)
            return await ops.yield_now(0)
        return await loops.gather(one("a", 3), one("b", 3)), log
    outcome = compare(runtime, program)[0]
    assert outcome[0] == "return" and outcome[1][0] == [0, 0]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_fail(runtime):
    async def program(ops):
        try:
            await ops.fail("boom")
        except ValueError:
            pass
        try:
            raise KeyError("inner")
        except KeyError:
            await ops.fail("outer")     # raises, with __context__ KeyError
    outcome = compare(runtime, program)[0]
    assert outcome[0] == "raise"
    assert outcome[1][:2] == (ValueError, "outer")
    assert outcome[1][3][:2] == (KeyError, "'inner'")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_states(runtime):
    async def program(ops):
        c = ops.sleep(0.02, "v")
        states = [inspect.getcoroutinestate(c)]

        async def watch():
            await loops.checkpoint()
            states.append(inspect.getcoroutinestate(c))
        result = await loops.gather(c, watch())
        states.append(inspect.getcoroutinestate(c))
        return result, states
    assert compare(runtime, program)[0] == (
        "return", (["v", None], ["CORO_CREATED", "CORO_SUSPENDED", "CORO_CLOSED"]))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_running_state_seen_from_python_called_by_rust(runtime):
    async def program(ops):
        box = []

        def probe():
            return inspect.getcoroutinestate(box[0]), box[0].cr_running
        box.append(ops.call(probe))
        return await box[0]
    assert compare(runtime, program)[0] == ("return", ("CORO_RUNNING", True))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_await_py(runtime):
    async def program(ops):
        obj = object()
        err = LookupError("from the awaitable")

        async def gives():
            await loops.checkpoint()
            return obj

        async def raises():
            await loops.checkpoint()
            raise err
        same_result = await ops.await_py(gives()) is obj
        try:
            await ops.await_py(raises())
        except LookupError as e:
            same_exc = e is err
        # The awaitable raises while the caller handles KeyError: the
        # exception's __context__ is that KeyError, as with `await`.
        try:
            raise KeyError("handled")
        except KeyError:
            try:
                await ops.await_py(raises())
            except LookupError as e:
                context = e.__context__
        # A native coroutine awaited by a native coroutine.
        nested = await ops.await_py(ops.sleep(0.01, "nested"))
        return same_result, same_exc, context, nested
    outcome = compare(runtime, program)[0]
    assert outcome[0] == "return"
    assert outcome[1][:2] == (True, True) and outcome[1][3] == "nested"
    assert outcome[1][2][1][:2] == (KeyError, "'handled'")


def test_await_py_cr_await():
    """While it awaits a Python awaitable, ``cr_await`` is that awaitable
    (as for ``await`` in async def)."""
    @types.coroutine
    def once():
        yield "suspended"
    for fn in (ex.await_py, py_await_py):
        inner = once()
        c = fn(inner)
        assert c.send(None) == "suspended"
        assert c.cr_await is inner
        with pytest.raises(StopIteration):
            c.send(None)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_cancel_handle(runtime):
    """The exception thrown at cancellation reaches the CancelHandle, which
    ends the sleep: the coroutine returns the exception."""
    async def program(ops):
        return await loops.cancel_after(lambda: ops.cancellable_sleep(2.0, "slept"), 0.02)
    outcome = compare(runtime, program)[0]
    assert outcome[0] == "return" and outcome[1][0] == "return"
    assert outcome[1][1][0] == "exception"


def test_cancel_handle_task_cancel():
    async def main(fn):
        task = asyncio.ensure_future(fn(2.0, "slept"))
        await asyncio.sleep(0.02)
        task.cancel("stop")
        result = await task
        return type(result), result.args, task.cancelled()
    assert asyncio.run(main(ex.cancellable_sleep)) == asyncio.run(main(py_cancellable_sleep)) \
        == (asyncio.CancelledError, ("stop",), False)


def test_cancel_handle_not_cancelled():
    assert asyncio.run(ex.cancellable_sleep(0.01, "slept")) == "slept"


# --- tracebacks, profilers --------------------------------------------------

def test_traceback_shows_the_rs_frame():
    def entries(make):
        async def main():
            await make()
        try:
            asyncio.run(main())
        except ValueError as e:
            return [(f.name, f.filename, f.lineno) for f in traceback.extract_tb(e.__traceback__)]
        raise AssertionError("no ValueError")
    native = entries(lambda: ex.fail("boom"))
    twin = entries(lambda: py_fail("boom"))
    assert native[-1][0] == "fail" and twin[-1][0] == "py_fail"
    assert os.path.realpath(native[-1][1]) == BUILT_LIB_RS
    assert native[-1][2] == fn_line("fail")
    # The same frames above it.
    assert native[:-1] == twin[:-1]


PYSPY_CHILD = textwrap.dedent("""
    import asyncio, sys
    import pyo3_async_example as ex

    def blocked():
        print("ready", flush=True)
        sys.stdin.readline()       # until the parent has dumped the stack
        return "done"

    async def call(callable):      # the twin
        return callable()

    target = ex.call if sys.argv[1] == "native" else call
    print(asyncio.run(target(blocked)), flush=True)
""")


@pytest.mark.skipif(FREE_THREADED, reason="py-spy 0.4.3 cannot read a free-threaded "
                    "(3.13t) process (benfred/py-spy#711)")
def test_py_spy_dump_shows_the_rs_frame(py_spy):
    import test_pyspy

    def dump(kind):
        return test_pyspy.frame_lines(test_pyspy.dump(py_spy, kind, PYSPY_CHILD))
    native, python = dump("native"), dump("python")
    assert native[0][0] == python[0][0] == "blocked"
    assert native[1][0] == "call" and python[1][0] == "call"
    assert os.path.realpath(native[1][1]) == BUILT_LIB_RS
    assert native[1][2] == fn_line("call")
    assert [f[0] for f in native[2:]] == [f[0] for f in python[2:]]


@pytest.fixture(scope="module")
def py_spy():
    import test_pyspy
    path = test_pyspy.PY_SPY
    if not os.access(path, os.X_OK):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", test_pyspy.pinned_py_spy()], check=True)
    assert os.access(path, os.X_OK), path
    return path


# --- panics -----------------------------------------------------------------

def test_panic_raises_pyo3_runtime_panic_exception():
    with pytest.raises(BaseException) as info:
        asyncio.run(ex.panic("it broke"))
    panic_exception = sys.modules["pyo3_runtime"].PanicException
    assert type(info.value) is panic_exception
    assert str(info.value) == "it broke"
    assert issubclass(panic_exception, BaseException)
    assert not issubclass(panic_exception, Exception)
    # The coroutine is finished and the next one works.
    assert asyncio.run(ex.ready(1)) == 1


def test_panic_exception_is_the_one_pycoro_raises():
    import pycoro_harness
    with pytest.raises(BaseException) as info:
        asyncio.run(pycoro_harness.panic("harness"))
    harness_type = type(info.value)
    if harness_type.__module__ != "pyo3_runtime":
        pytest.skip(f"pycoro_harness raises {harness_type.__module__}.PanicException: its switch "
                    "to sys.modules['pyo3_runtime'] (issue 14) has not landed")
    with pytest.raises(BaseException) as info:
        asyncio.run(ex.panic("example"))
    assert type(info.value) is harness_type is sys.modules["pyo3_runtime"].PanicException


# --- what a PyO3 user sees change (docs/pyo3-native-coroutines.md) ---------

VISIBLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pyo3_visible.py")


@pytest.fixture(scope="module")
def visible():
    """tests/pyo3_visible.py's observations, each in a child process (all
    three started at once: each waits mostly for its own children):
    {"native": ..., "twin": ..., "fallback": ...}."""
    runs = {
        "native": ("native", {}),
        "twin": ("twin", {}),
        "fallback": ("native", {"PYCORO_NATIVE_FRAMES": "0"}),
    }
    children = {k: subprocess.Popen([sys.executable, VISIBLE, mode], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True,
                                    env={**os.environ, **env})
                for k, (mode, env) in runs.items()}
    out = {}
    for k, child in children.items():
        stdout, stderr = child.communicate(timeout=300)
        assert child.returncode == 0, stdout + stderr
        assert "panicked" not in stderr, stderr
        out[k] = json.loads(stdout)
    return out


# PyO3's own Coroutine (its fallback, and stock PyO3), as observed.
COROUTINE_OBSERVED = {
    "type": "builtins.Coroutine",
    "is_coroutine_type": False,
    "inspect.iscoroutine": False,
    "asyncio.iscoroutine": True,
    "repr": "<builtins.Coroutine object",
    "__name__": "ready",
    "__qualname__": "ready",
    "has __next__": True,
    "coroutine attributes": [],
    "__await__() is self": True,
    "type(__await__())": "Coroutine",
    "send(non-None) when fresh": ["raise", "StopIteration", "1"],
    "next(c)": ["raise", "StopIteration", "1"],
    "iscoroutinefunction(fn)": False,
    "re-entry": ["raise", "RuntimeError", "Already borrowed"],
    "send after completion": ["raise", "RuntimeError", "cannot reuse already awaited coroutine"],
    "never awaited": [],
    "-W error: exit code, stdout, last stderr line": [0, "end of program", ""],
    "pytest -W error: exit code, summary": [0, "1 passed"],
    "task.cancel() while sleeping": ["CancelledError", ["stop"], True],
    "under trio": ["raise", "RuntimeError", "no running event loop"],
}


def test_visible_native_is_async_def(visible):
    """Every observation of the native coroutine is the async def twin's,
    but inspect.iscoroutinefunction (the function is a builtin) and trio
    (where the twin, which sleeps with asyncio.sleep, cannot run)."""
    native, twin = dict(visible["native"]), dict(visible["twin"])
    assert native.pop("iscoroutinefunction(fn)") is False
    assert twin.pop("iscoroutinefunction(fn)") is True
    assert native.pop("under trio") == ["return", "'slept'"]
    assert twin.pop("under trio") == "n/a"
    assert native == twin
    # What changes, against PyO3's own Coroutine.
    changed = {k for k in native if native[k] != COROUTINE_OBSERVED[k]}
    assert changed == {
        "type", "is_coroutine_type", "inspect.iscoroutine", "repr", "has __next__",
        "coroutine attributes", "__await__() is self", "type(__await__())",
        "send(non-None) when fresh", "next(c)", "re-entry", "never awaited",
        "-W error: exit code, stdout, last stderr line",
        "pytest -W error: exit code, summary"}


def test_visible_fallback_is_pyo3_coroutine(visible):
    """PYCORO_NATIVE_FRAMES=0 makes the same module use PyO3's own
    Coroutine, as on an unpatched interpreter."""
    assert visible["fallback"] == COROUTINE_OBSERVED


# --- the same wheel on an unpatched CPython ---------------------------------

PRISTINE_PROGRAM = textwrap.dedent("""
    import asyncio, ctypes, inspect, json, sys, time, types
    import pyo3_async_example as ex
    assert not hasattr(ctypes.pythonapi, "PyUnstable_Coro_NewNative"), "not the pristine build"
    c = ex.ready(1)
    out = {"type": f"{type(c).__module__}.{type(c).__qualname__}",
           "is_coroutine_type": type(c) is types.CoroutineType}
    c.close()
    out["ready"] = asyncio.run(ex.ready("value"))
    t0 = time.monotonic()
    out["sleep"] = asyncio.run(ex.sleep(0.05, "slept"))
    out["slept_enough"] = time.monotonic() - t0 >= 0.05
    try:
        asyncio.run(ex.fail("boom"))
    except ValueError as e:
        out["fail"] = [type(e).__name__, str(e)]
    out["await_py"] = asyncio.run(ex.await_py(asyncio.sleep(0.01, "awaited")))
    out["file"] = ex.pyo3_async_example.__file__   # the extension module in the package
    print(json.dumps(out))
""")


def pristine_or_skip():
    if not os.access(PRISTINE_PY, os.X_OK):
        pytest.skip(f"{PRISTINE_PY} is missing: scripts/build-example --pristine makes it")
    if FREE_THREADED:
        pytest.skip("the pristine check installs the default build's cp313 wheel")
    env = dict(os.environ)
    env.pop("LD_LIBRARY_PATH", None)   # the unpatched build finds its own libpython
    env.pop("PYTHONPATH", None)
    # The venv can exist without the wheel (scripts/build-cpython --pristine
    # makes it; the example-pristine phase, which --quick skips, installs it).
    found = subprocess.run(
        [PRISTINE_PY, "-c", "import importlib.util, sys; "
         "sys.exit(importlib.util.find_spec('pyo3_async_example') is None)"],
        env=env, timeout=60)
    if found.returncode != 0:
        pytest.skip(f"pyo3_async_example is not installed for {PRISTINE_PY}: "
                    "scripts/build-example --pristine installs it")
    return env


def test_pristine_same_wheel_falls_back_to_pyo3_coroutine():
    env = pristine_or_skip()
    r = subprocess.run([PRISTINE_PY, "-c", PRISTINE_PROGRAM], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["type"] == "builtins.Coroutine" and not out["is_coroutine_type"]
    assert out["ready"] == "value"
    assert out["sleep"] == "slept" and out["slept_enough"]
    assert out["fail"] == ["ValueError", "boom"]
    assert out["await_py"] == "awaited"
    # The very same extension module file as here.
    def digest(path):
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    assert out["file"].endswith(".so") and ex.pyo3_async_example.__file__.endswith(".so")
    assert digest(out["file"]) == digest(ex.pyo3_async_example.__file__)
