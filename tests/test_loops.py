"""The same programs, native and async def, under every event loop.

Each scenario below is a function of ``ops`` (``loops.NATIVE`` or
``loops.TWIN``) returning the program's ``main`` coroutine function.  It
runs twice under each runtime of ``loops.RUNTIMES`` (asyncio, uvloop,
trio, anyio on asyncio, anyio on trio, a bare ``send`` loop), once with
native coroutines and once with their ``async def`` twins, and the two
outcomes must be equal: result, exception type, message, args,
``__context__``, ``__cause__`` (and exception-group members), coroutine
states the program records, and the warnings emitted.
"""

import asyncio
import inspect
import time
import types

import anyio
import pytest
import sniffio
import trio

import pycoro_harness as h
from loops import (  # noqa: F401 - frozen_heap: an autouse fixture
    NATIVE, RUNTIMES, TWIN, cancel_after, checkpoint, current_runtime,
    frozen_heap, gather, run, run_raw,
)

ASYNC_RUNTIMES = [r for r in RUNTIMES if r != "send"]


def cancelled_type():
    """What a cancellation raises in the current runtime."""
    return trio.Cancelled if current_runtime() == "trio" else asyncio.CancelledError


def compare(runtime, scenario):
    native = run(runtime, scenario(NATIVE))
    twin = run(runtime, scenario(TWIN))
    assert native == twin
    return native


SCENARIOS = {}


def scenario(*, runtimes=RUNTIMES):
    def register(fn):
        SCENARIOS[fn.__name__] = (fn, runtimes)
        return fn
    return register


# --- results and exceptions ------------------------------------------------

@scenario()
def ready(ops):
    async def main():
        return await ops.ready(42)
    return main


@scenario()
def fail_value_error(ops):
    async def main():
        return await ops.fail(ValueError("boom"))
    return main


@scenario()
def fail_stop_iteration(ops):
    # PEP 479: RuntimeError("coroutine raised StopIteration"), cause kept.
    async def main():
        return await ops.fail(StopIteration("x"))
    return main


@scenario()
def fail_with_context(ops):
    async def main():
        try:
            raise KeyError("being handled")
        except KeyError:
            return await ops.fail(ValueError("raised"))
    return main


@scenario()
def fail_with_cause(ops):
    async def main():
        e = ValueError("with cause")
        e.__cause__ = KeyError("cause")
        return await ops.fail(e)
    return main


@scenario()
def catch_lookup(ops):
    async def main():
        caught = await ops.catch(ops.fail(KeyError("native")), LookupError)
        return caught, caught.__context__
    return main


@scenario()
def catch_passes_others(ops):
    async def main():
        return await ops.catch(ops.fail(ValueError("not caught")), KeyError)
    return main


# --- awaiting, yielding, waking ---------------------------------------------

@scenario()
def yield_now(ops):
    async def main():
        return await ops.yield_now(3)
    return main


@scenario()
def interleave(ops):
    async def main():
        order = []

        async def tagged(tag):
            await ops.yield_now(2)
            order.append(tag)
            await ops.yield_now(1)
            order.append(tag.upper())
        await gather(tagged("a"), tagged("b"), tagged("c"))
        return order
    return main


@scenario()
def sleep_woken_by_a_rust_thread(ops):
    async def main():
        return await ops.sleep(0.01, "slept")
    return main


@scenario()
def many_sleeps(ops):
    async def main():
        return await gather(*(ops.sleep(0.002 * (i % 4), i) for i in range(20)))
    return main


@scenario()
def ping_from_another_thread(ops):
    async def main():
        return await gather(*(ops.ping(20) for _ in range(10)))
    return main


@scenario()
def await_python_and_native(ops):
    async def inner(v):
        await checkpoint()
        return v

    async def main():
        return await ops.await_all(inner(1), ops.ready(2), ops.yield_now(2),
                                   ops.await_(inner(4)), ops.sleep(0, 5))
    return main


@scenario()
def await_raising(ops):
    async def raising():
        await checkpoint()
        try:
            raise KeyError("inner")
        except KeyError:
            raise ValueError("outer")

    async def main():
        return await ops.await_(raising())
    return main


@scenario()
def await_not_awaitable(ops):
    async def main():
        return await ops.await_(42)
    return main


@scenario()
def hold(ops):
    obj = ("held", 1)

    async def main():
        return await ops.hold(obj)
    return main


@scenario()
def gather_failure(ops):
    # asyncio: the first exception; trio: an ExceptionGroup of it.
    async def main():
        return await gather(ops.yield_now(2), ops.fail(ValueError("in gather")))
    return main


# --- states ---------------------------------------------------------------

@scenario()
def states(ops):
    async def main():
        seen = []
        holder = []

        async def look():
            c = holder[0]
            seen.append((inspect.getcoroutinestate(c), c.cr_running))
            await checkpoint()
            seen.append((inspect.getcoroutinestate(c), c.cr_running))

        c = ops.await_(look())
        holder.append(c)
        seen.append(inspect.getcoroutinestate(c))

        async def watcher():
            await checkpoint()
            seen.append(("watch", inspect.getcoroutinestate(c), c.cr_await is not None))
        await gather(c, watcher())
        seen.append(inspect.getcoroutinestate(c))
        return seen
    return main


@scenario()
def never_awaited_warning(ops):
    async def main():
        c = ops.ready(1)
        del c
        return "done"
    return main


@scenario()
def reuse_is_refused(ops):
    async def main():
        c = ops.ready(1)
        await c
        try:
            await c
        except RuntimeError as e:
            return e
    return main


@scenario()
def await_a_coroutine_driven_elsewhere(ops):
    # A suspended coroutine belongs to whoever drives it: awaiting it from
    # another coroutine is "coroutine is being awaited already".  An async
    # def is always suspended in an await; a native one may be suspended at
    # a direct yield (yield_now), and the guard must hold there too.
    async def main():
        c = ops.yield_now(2)
        c.send(None)
        state = inspect.getcoroutinestate(c)

        async def other():
            return await c
        try:
            return await other()
        except RuntimeError as e:
            return state, e, inspect.getcoroutinestate(c)
        finally:
            c.close()
    return main


# --- cancellation ----------------------------------------------------------

@scenario(runtimes=RUNTIMES)
def cancel_rust_sleep(ops):
    async def main():
        return await cancel_after(lambda: ops.sleep(3600), 0.01)
    return main


@scenario(runtimes=RUNTIMES)
def cancel_caught_by_the_future(ops):
    async def main():
        return await cancel_after(lambda: ops.catch_sleep(3600, cancelled_type(), "no"), 0.01)
    return main


@scenario(runtimes=RUNTIMES)
def cancel_python_await(ops):
    async def main():
        return await cancel_after(
            lambda: ops.catch(sleep_forever(), cancelled_type()), 0.01)
    return main


async def sleep_forever():
    if current_runtime() == "trio":
        await trio.sleep_forever()
    else:
        await asyncio.get_running_loop().create_future()


@scenario(runtimes=ASYNC_RUNTIMES)
def cancel_requested_before_a_yield_loop(ops):
    # Deterministic: the cancel is requested by the task itself.  asyncio
    # delivers it once; trio at every checkpoint of the cancelled scope.
    async def main():
        if current_runtime() == "trio":
            with trio.CancelScope() as scope:
                scope.cancel()
                return await ops.catch_yield(3, trio.Cancelled)
        asyncio.current_task().cancel("self")
        return await ops.catch_yield(3, asyncio.CancelledError)
    return main


@scenario(runtimes=ASYNC_RUNTIMES)
def timeout_around_a_rust_sleep(ops):
    async def main():
        with anyio.move_on_after(0.01) as scope:
            await ops.sleep(3600)
        return scope.cancelled_caught
    return main


@scenario(runtimes=ASYNC_RUNTIMES)
def timeout_caught_then_reraised(ops):
    async def main():
        with anyio.move_on_after(0.01) as scope:
            caught = await ops.catch_sleep(3600, cancelled_type())
            raise caught
        return scope.cancelled_caught
    return main


PARAMS = [
    pytest.param(name, runtime, id=f"{name}-{runtime}")
    for name, (fn, runtimes) in SCENARIOS.items()
    for runtime in runtimes
]


@pytest.mark.parametrize("name, runtime", PARAMS)
def test_same_as_async_def(name, runtime):
    compare(runtime, SCENARIOS[name][0])


# --- checks on the native side alone --------------------------------------

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_is_found_as_sniffio_finds_it(runtime):
    async def main():
        try:
            lib = sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            lib = None
        return lib, h.current_runtime(), current_runtime()
    sniffed, native, mirror = run_raw(runtime, main)
    assert native == mirror == sniffed


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_cancel_drops_the_future(runtime):
    before = h.drops()

    async def main():
        return await cancel_after(lambda: h.catch_sleep(3600, cancelled_type()), 0.01)
    kind, caught = run_raw(runtime, main)
    assert kind == "return" and isinstance(caught, (asyncio.CancelledError, trio.Cancelled))
    assert h.drops() == before + 1


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_uninterruptible_wait_is_dropped_at_cancel(runtime):
    # h.pending() waits on a Rust future that cannot take the exception:
    # it propagates at once, and the future is dropped.
    before = h.drops()

    async def main():
        return await cancel_after(h.pending, 0.01)
    kind, exc = run_raw(runtime, main)
    assert kind == "raise" and isinstance(exc, (asyncio.CancelledError, trio.Cancelled))
    assert h.drops() == before + 1


@types.coroutine
def counting(coro, suspensions):
    """Await ``coro``, counting its suspensions (what a Task sees)."""
    value, exc = None, None
    while True:
        try:
            y = coro.send(value) if exc is None else coro.throw(exc)
        except StopIteration as e:
            return e.value
        suspensions.append(type(y).__name__)
        try:
            value, exc = (yield y), None
        except BaseException as e:
            value, exc = None, e


@pytest.mark.parametrize("runtime", ASYNC_RUNTIMES)
def test_waits_without_busy_polling(runtime):
    # While the Rust thread sleeps, the runtime does not step the native
    # coroutine: it suspends once, on the runtime's wake-up object.
    suspensions = []

    async def main():
        return await counting(h.sleep(0.05, "done"), suspensions)
    assert run_raw(runtime, main) == "done"
    assert 1 <= len(suspensions) <= 2, suspensions


def test_bare_send_loop_busy_polls():
    # The documented behaviour without a runtime: bare yields until woken.
    suspensions = []

    async def main():
        return await counting(h.sleep(0.02, "done"), suspensions)
    assert run_raw("send", main) == "done"
    assert set(suspensions) == {"NoneType"} and len(suspensions) > 2


def test_wake_from_many_threads_under_trio():
    # Wakers fired from several OS threads at once, while trio runs.
    async def main():
        async with trio.open_nursery() as nursery:
            results = []

            async def one(i):
                results.append(await h.sleep(0.001 * (i % 5), i))
            for i in range(50):
                nursery.start_soon(one, i)
        return sorted(results)
    assert trio.run(main) == list(range(50))


def test_wake_after_the_loop_ended_is_harmless():
    # The Rust thread wakes a coroutine whose trio run is over.
    async def main():
        with trio.move_on_after(0.001):
            await h.sleep(0.05)
    trio.run(main)
    time.sleep(0.1)  # the sleep thread fires into a finished run
    assert trio.run(lambda: h.ready("still alive")) == "still alive"


EXIT_WHILE_WAKING = """
import asyncio, trio, pycoro_harness as h
for _ in range(30):
    asyncio.run(h.sleep(0.002))
    trio.run(h.sleep, 0.002)
print("done")
"""


WAKER_AT_EXIT = """
import atexit, asyncio, threading, pycoro_harness as h
def wakers():
    return [t.name for t in threading.enumerate() if t.name == "pycoro-waker"]
# Registered before the harness's callback, so it runs after it.
atexit.register(lambda: print("at exit:", wakers()))
asyncio.run(h.sleep(0.002))
print("after the run:", wakers())
"""


def test_the_waker_thread_ends_before_finalization():
    # The daemon thread that makes the Rust threads' wake-up calls is ended
    # and joined by an atexit callback: on 3.13 a daemon thread still
    # waiting when Py_Finalize() frees the thread states can read its own
    # freed state (gh-124878; AddressSanitizer saw it in the test below).
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", WAKER_AT_EXIT],
                       capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout.splitlines()) == (
        0, ["after the run: ['pycoro-waker']", "at exit: []"]), r.stderr[-2000:]


FORKED_CHILD = r"""
import asyncio, os, signal, time, traceback, types
import pycoro_harness as h

@types.coroutine
def suspend():
    yield

async def py_sleep_polled(delay, result):
    # The async def twin of a sleep driven by a bare send() loop.
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        await suspend()
    return result

def send_until_done(coro, seconds=20.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            coro.send(None)
        except StopIteration as e:
            return e.value
        time.sleep(0.001)
    return "still pending"

# The parent's timer and waker threads exist when it forks, and one sleep
# of each kind is suspended, its deadline queued.
print("parent:", asyncio.run(h.sleep(0.01, "slept")), flush=True)
pending = [h.sleep(0.3, "inherited"), py_sleep_polled(0.3, "inherited")]
for coro in pending:
    coro.send(None)
pid = os.fork()
if pid == 0:
    signal.alarm(60)  # a hang ends the child with SIGALRM
    try:
        lines = [
            "child: " + " ".join(send_until_done(coro) for coro in pending),
            "child: " + asyncio.run(h.sleep(0.01, "slept"))
            + " " + asyncio.run(asyncio.sleep(0.01, "slept")),
        ]
        os.write(1, ("\n".join(lines) + "\n").encode())
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)
_, status = os.waitpid(pid, 0)
print("child exit:", os.waitstatus_to_exitcode(status))
for coro in pending:
    coro.close()
"""


def test_sleep_in_a_forked_child():
    # A forked child has only the thread that forked: pycoro's timer thread
    # and waker thread are the parent's.  The child's first native sleep
    # (not only its first wake-up, which the waker's fork hook covers)
    # finishes as asyncio.sleep does, and a sleep suspended in the parent
    # at the fork finishes in the child as its async def twin does.
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", "-c", FORKED_CHILD],
                       capture_output=True, text=True, timeout=180)
    assert (r.returncode, r.stdout.splitlines()) == (0, [
        "parent: slept",
        "child: inherited inherited",
        "child: slept slept",
        "child exit: 0",
    ]), r.stderr[-2000:]


@pytest.mark.parametrize("attempt", range(3))
def test_exit_while_a_rust_thread_wakes_does_not_abort(attempt):
    # The last wake-up of each run may still be under way when the
    # interpreter exits.  A Rust thread that ran call_soon_threadsafe /
    # run_sync_soon itself was ended by pthread_exit() at finalization,
    # which cannot unwind through Rust frames: SIGABRT in most runs.
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", EXIT_WHILE_WAKING],
                       capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout.strip()) == (0, "done"), r.stderr[-2000:]
