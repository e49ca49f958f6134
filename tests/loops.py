"""Drive the same program under every runtime the harness supports.

``RUNTIMES`` names them: asyncio, uvloop, trio, anyio on its asyncio and
its trio backends, and a bare ``send(None)`` loop.  ``run(runtime, main)``
runs ``main()`` (a zero-argument callable returning a coroutine) there and
returns its outcome.

``NATIVE`` and ``TWIN`` hold the probe's native coroutine functions and
their ``async def`` twins.  The twins are runtime-neutral the way the
harness is (see ``pycoro::runtime``): ``checkpoint()`` is
``trio.lowlevel.checkpoint()`` in a trio task and ``asyncio.sleep(0)``
(a bare yield) anywhere else, which is what a native ``yield_now`` does.
"""

import asyncio
import inspect
import sys
import time
import types
import warnings
import gc

import sysconfig

import anyio
import pytest
import trio

try:
    import uvloop
except ImportError:
    # uvloop has no 3.13t wheel (requirements-test-ft.txt): the
    # free-threaded build runs every other runtime.  Anywhere else a
    # missing uvloop is an error.
    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        raise
    uvloop = None

import pycoro_harness as h
from compare import describe_exc, norm, scrub, send_loop  # noqa: F401 - re-exported

RUNTIMES = ["asyncio", "uvloop", "trio", "anyio-asyncio", "anyio-trio", "send"]
if uvloop is None:
    RUNTIMES.remove("uvloop")


# --- the runtime, found as the harness finds it ----------------------------

def current_runtime():
    """Mirror of ``pycoro::runtime::current``: "trio", "asyncio" or None."""
    if "trio" in sys.modules and trio.lowlevel.in_trio_task():
        return "trio"
    if "asyncio" in sys.modules and asyncio.events._get_running_loop() is not None:
        return "asyncio"
    return None


async def checkpoint():
    """A schedule point, as a native ``yield_now`` makes one."""
    if current_runtime() == "trio":
        await trio.lowlevel.checkpoint()
    else:
        await asyncio.sleep(0)


async def sleep(seconds):
    """Sleep in whatever runs us (a bare send loop: yield until the time)."""
    rt = current_runtime()
    if rt == "trio":
        await trio.sleep(seconds)
    elif rt == "asyncio":
        await asyncio.sleep(seconds)
    else:
        deadline = time.monotonic() + seconds
        await asyncio.sleep(0)
        while time.monotonic() < deadline:
            await asyncio.sleep(0)


# --- async def twins of the probe's functions ------------------------------

async def py_ready(value):
    return value


async def py_fail(exc):
    raise exc


async def py_yield_now(n):
    for _ in range(n):
        await checkpoint()
    return n


async def py_sleep(seconds, result=None):
    await sleep(seconds)
    return result


async def py_ping(n):
    for _ in range(n):
        await checkpoint()
    return n


async def py_await_(aw):
    return await aw


async def py_await_all(*aws):
    return [await aw for aw in aws]


async def py_catch(aw, exc_type):
    try:
        return await aw
    except exc_type as e:
        return e


async def py_hold(obj):
    await checkpoint()
    return obj


async def py_catch_sleep(seconds, exc_type, result=None):
    try:
        await sleep(seconds)
    except exc_type as e:
        return e
    return result


async def py_catch_yield(n, exc_type):
    caught = []
    for _ in range(n):
        try:
            await checkpoint()
        except exc_type as e:
            caught.append(e)
    return caught


NAMES = ["ready", "fail", "yield_now", "sleep", "ping", "await_", "await_all",
         "catch", "hold", "catch_sleep", "catch_yield"]
NATIVE = types.SimpleNamespace(**{n: getattr(h, n) for n in NAMES})
TWIN = types.SimpleNamespace(**{n: globals()["py_" + n] for n in NAMES})


def twin_name(name):
    """The twin's name for a native function's name (for messages)."""
    return "py_" + name if name in NAMES else name


# --- concurrency and cancellation, per runtime -----------------------------

@types.coroutine
def _round_robin(coros):
    """gather() for a bare send loop: one send to each in turn."""
    results = [None] * len(coros)
    pending = list(range(len(coros)))
    try:
        while pending:
            for i in list(pending):
                try:
                    coros[i].send(None)
                except StopIteration as e:
                    results[i] = e.value
                    pending.remove(i)
            if pending:
                yield None
    finally:
        for c in coros:
            c.close()
    return results


async def gather(*aws):
    """Run the awaitables concurrently in the current runtime; their
    results in order (the first exception propagates)."""
    rt = current_runtime()
    if rt == "trio":
        results = [None] * len(aws)

        async def one(i, aw):
            results[i] = await aw
        async with trio.open_nursery() as nursery:
            for i, aw in enumerate(aws):
                nursery.start_soon(one, i, aw)
        return results
    if rt == "asyncio":
        return list(await asyncio.gather(*aws))

    async def wrap(aw):
        return await aw
    return await _round_robin([wrap(aw) for aw in aws])


async def cancel_after(make, delay, msg="stop"):
    """Run ``make()`` as a child task, cancel it after ``delay`` seconds of
    the runtime's clock; the child's outcome: ("return", value) or
    ("raise", exception)."""
    out = []
    rt = current_runtime()

    async def child():
        try:
            out.append(("return", await make()))
        except BaseException as e:
            out.append(("raise", e))
            raise

    if rt == "trio":
        scope = trio.CancelScope()

        async def scoped():
            with scope:
                await child()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(scoped)
            await trio.sleep(delay)
            scope.cancel()
        return out[0]
    if rt == "asyncio":
        task = asyncio.ensure_future(child())
        await asyncio.sleep(delay)
        task.cancel(msg)
        try:
            await task
        except asyncio.CancelledError:
            if not out:
                raise
        return out[0]
    # Bare send: throw CancelledError at the first suspension after delay.
    coro = child()
    deadline = time.monotonic() + delay
    try:
        coro.send(None)
        while time.monotonic() < deadline:
            coro.send(None)
            await asyncio.sleep(0)
        coro.throw(asyncio.CancelledError(msg))
        while True:
            coro.send(None)
            await asyncio.sleep(0)
    except StopIteration:
        pass
    except BaseException:
        if not out:
            raise
    return out[0]


# --- running a program ----------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def frozen_heap():
    """``run`` collects twice per run: with the heap frozen (``gc.freeze``)
    a collection scans only the objects made since (about 0.4 ms instead of
    50-150 ms with hypothesis, numpy, trio and anyio loaded, and growing
    with hypothesis's data).  ``run`` freezes again before each run; this
    fixture unfreezes when the module is done.  Import it into a test
    module to use it."""
    threshold = gc.get_threshold()
    gc.collect()
    freeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    gc.collect()


FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def freeze():
    """``gc.freeze()``, and on the free-threaded build (3.13t) a threshold
    that keeps the collector as lazy as with nothing frozen.  That collector
    has no generations: each collection visits the whole heap (frozen
    objects are skipped only after the visit: about 15 ms with the test
    modules loaded, instead of 0.001 ms with the GIL), and it collects
    automatically once the objects allocated since the last collection
    exceed both the threshold (2,000) and a quarter of the objects it found
    alive, which leaves out the frozen ones (Python/gc_free_threading.c,
    gc_should_collect).  With the heap frozen it would collect every 2,000
    allocations, and the every-runtime programs took ten times as long as
    with the GIL."""
    gc.freeze()
    if FREE_THREADED:
        gc.set_threshold(max(2000, gc.get_freeze_count() // 4))


def _seed_trio():
    # trio shuffles each batch of runnable tasks with its module RNG: seed
    # it so that two runs of one program schedule alike (private, tests only).
    rng = getattr(trio._core._run, "_r", None)
    if rng is not None:
        rng.seed(0)


def run_raw(runtime, main):
    """Run main() under ``runtime``; return its result or raise."""
    if runtime == "asyncio":
        return asyncio.run(main())
    if runtime == "uvloop":
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    if runtime == "trio":
        _seed_trio()
        return trio.run(main)
    if runtime == "anyio-asyncio":
        return anyio.run(main, backend="asyncio")
    if runtime == "anyio-trio":
        _seed_trio()
        return anyio.run(main, backend="trio")
    if runtime == "send":
        return send_loop(main())
    raise ValueError(runtime)


def _norm_report(r):
    kind, category, msg = r[:3]
    for n in NAMES:
        msg = msg.replace(f"'{n}'", f"'py_{n}'")
    return (kind, category.__name__, scrub(msg))


def tracking(ops, created):
    """``ops`` whose coroutines' ids are added to the set ``created``."""
    def wrap(fn):
        def make(*args, **kwargs):
            coro = fn(*args, **kwargs)
            created.add(id(coro))
            return coro
        return make
    def track(coro):
        created.add(id(coro))
        return coro
    return types.SimpleNamespace(track=track,
                                 **{n: wrap(getattr(ops, n)) for n in NAMES})


def run(runtime, main, created=None):
    """Run main() under ``runtime``: (outcome, reports), where outcome is
    ("return", normalized value) or ("raise", described exception), and
    reports are the warnings and the unraisable exceptions (e.g. "coroutine
    ignored GeneratorExit" at finalization) of the run, sorted.

    With ``created`` (a set filled by ``tracking``), a report about a
    coroutine counts only if that coroutine was made in this run: a
    coroutine of an earlier run may be freed during this one (the id of a
    live object is unique, so an earlier run's coroutine cannot share an id
    recorded here)."""
    # Garbage of earlier runs must not report inside this one.  Then freeze
    # what is alive (see `frozen_heap`): the collection at the end scans only
    # what this run made, however much the test framework keeps alive.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc.collect()
    freeze()
    reports = []
    hook = sys.unraisablehook
    sys.unraisablehook = lambda u: reports.append(
        ("unraisable", u.exc_type, str(u.exc_value), inspect.iscoroutine(u.object),
         id(u.object)))
    try:
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            # Keep (category, message, source) without the source object:
            # WarningMessage.source would keep a never-awaited coroutine
            # alive (resurrect it), which changes when its children are
            # released.
            warnings._showwarnmsg_impl = lambda m: reports.append(
                ("warning", m.category, str(m.message), inspect.iscoroutine(m.source),
                 id(m.source)))
            try:
                outcome = ("return", norm(run_raw(runtime, main)))
            except BaseException as e:  # noqa: BLE001 - compared, not handled
                outcome = ("raise", describe_exc(e))
            gc.collect()
    finally:
        sys.unraisablehook = hook
    if created is not None:
        reports = [r for r in reports if not r[3] or r[4] in created]
    return outcome, sorted(_norm_report(r) for r in reports)
