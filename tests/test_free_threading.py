"""The free-threaded build (3.13t): native coroutines on many threads.

Skipped unless the interpreter is free-threaded (``build/venv-ft``, made by
``scripts/build-cpython --free-threaded`` and ``scripts/build-harness
--free-threaded``).  Each scenario runs an ``async def`` (or ``def ...
yield``) twin beside the native coroutine (or generator) and compares; the
stress tests below race several threads on one native object.
"""

import asyncio
import collections
import gc
import inspect
import queue
import sys
import sysconfig
import threading
import time
import traceback
import types
import warnings
import weakref

import pytest

import pycoro_harness as h
from compare import describe_exc, send_loop_trace

pytestmark = pytest.mark.skipif(
    not sysconfig.get_config_var("Py_GIL_DISABLED"),
    reason="needs the free-threaded build (build/venv-ft)",
)


def test_import_leaves_the_gil_off():
    assert "pycoro_harness" in sys.modules
    assert not sys._is_gil_enabled()


async def py_sleep(delay, value):
    await asyncio.sleep(delay)
    return value


async def program(sleep, k):
    # Wake-ups from other threads: the native sleep is woken by a Rust
    # thread, which calls the loop's call_soon_threadsafe.
    results = []
    for i in range(5):
        results.append(await sleep(0.002, (k, i)))
    results += await asyncio.gather(*(sleep(0.001 * j, (k, j)) for j in range(4)))
    return results


def run_on_threads(sleep, nthreads=8):
    out = [None] * nthreads
    barrier = threading.Barrier(nthreads)

    def worker(k):
        barrier.wait()
        out[k] = asyncio.run(program(sleep, k))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_event_loop_per_thread_same_results_as_async_def():
    c = h.sleep(0, None)
    assert type(c) is types.CoroutineType
    c.close()
    for _ in range(5):
        native = run_on_threads(h.sleep)
        python = run_on_threads(py_sleep)
        assert native == python
        assert native[3] == [(3, i) for i in range(5)] + [(3, j) for j in range(4)]
    assert not sys._is_gil_enabled()


def test_one_coroutine_resumed_from_two_threads():
    # The probe's yield_now and an async def twin, sent into from two
    # threads at once: one thread runs a step, the other gets the error an
    # async def gives, never both at once.
    for make in (lambda: h.yield_now(1), None):
        if make is None:
            @types.coroutine
            def _y():
                yield

            async def py_yield_now():
                await _y()

            make = py_yield_now
        errors = []
        for _ in range(200):
            c = make()
            barrier = threading.Barrier(2)

            def send():
                barrier.wait()
                try:
                    c.send(None)
                except StopIteration:
                    pass
                except (ValueError, RuntimeError) as e:
                    errors.append(str(e))

            ts = [threading.Thread(target=send) for _ in range(2)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            c.close()
        assert set(errors) <= {
            "coroutine already executing",
            "cannot reuse already awaited coroutine",
        }


# --- stress: native objects and their twins under thread contention ---------
#
# The twins are not raced themselves: on 3.13t an ordinary generator or
# async def moves its frame between states with plain loads and stores (see
# the comment above gen_frame_state() in the patched Objects/genobject.c),
# and two threads calling next() on one Python generator at once can run
# its frame on both and crash the interpreter (py_count(200_000) below,
# raced by 6 threads calling next(), segfaulted in _PyEval_EvalFrameDefault
# under gen_iternext).  So what the twin raises is taken from it without a
# race: the "already executing" error of a re-entered twin, and the outcome
# of each operation in each state the twin can be in.  The native object must show only those under
# the race.  Assertions do not depend on how the threads interleave.


def py_count(n):
    for i in range(n):
        yield i


async def py_yield_now(n):
    for _ in range(n):
        await asyncio.sleep(0)
    return n


def outcome(f, *args):
    """What Python sees of one call: ("return", value), ("stop", the
    StopIteration's value) or ("raise", describe_exc(exception))."""
    try:
        return ("return", f(*args))
    except StopIteration as e:
        return ("stop", e.value)
    except BaseException as e:
        return ("raise", describe_exc(e))


def reentered_error(kind, step):
    """What `step(obj)` gives when made from inside obj's own running step,
    obj a def generator (kind "generator") or an async def coroutine."""
    seen = []
    if kind == "generator":
        def body():
            seen.append(outcome(step, g))
            yield 1
        g = body()
        next(g)
    else:
        async def body():
            seen.append(outcome(step, c))
        c = body()
        send_loop_trace(c)
    return seen[0]


def run_threads(target, nthreads, *args):
    barrier = threading.Barrier(nthreads, timeout=60)
    errors = []

    def worker(k):
        try:
            barrier.wait()
            target(k, *args)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def race_steps(obj, step, nthreads, finished):
    """Each of `nthreads` threads calls step(obj) until `finished(outcome)`
    says the object is done (it keeps going after "already executing").
    Returns the outcomes of each thread, in its order."""
    per_thread = [[] for _ in range(nthreads)]

    def worker(k):
        mine = per_thread[k]
        while True:
            o = outcome(step, obj)
            mine.append(o)
            if finished(o):
                return

    run_threads(worker, nthreads)
    return per_thread


def test_race_next_on_one_native_generator():
    # count(n) (a Rust iterator) raced by 6 threads calling next(): every
    # item exactly once, and the losers get the ValueError a re-entered def
    # generator gives.
    busy = reentered_error("generator", next)
    assert busy == ("raise", (ValueError, "generator already executing",
                              ("generator already executing",), None, None, None))
    n = 20_000
    for _ in range(10):
        g = h.count(n)
        per_thread = race_steps(g, next, 6, lambda o: o[0] == "stop")
        items = [v for t in per_thread for kind, v in t if kind == "return"]
        others = collections.Counter(o for t in per_thread for o in t if o[0] != "return")
        assert sorted(items) == list(range(n))
        # Each thread sees its items in order (one iterator, one position).
        for t in per_thread:
            mine = [v for kind, v in t if kind == "return"]
            assert mine == sorted(mine)
        assert set(others) <= {busy, ("stop", None)}
        assert others[("stop", None)] == 6
        assert inspect.getgeneratorstate(g) == inspect.GEN_CLOSED
        # Exhausted: next() goes on raising StopIteration, as for the twin.
        twin = py_count(0)
        assert outcome(next, g) == outcome(next, twin) == ("stop", None)


def test_race_send_on_one_native_coroutine():
    # yield_now(n) raced by 6 threads calling send(None): n bare yields and
    # one return in all, the other calls get what an async def gives when
    # re-entered ("already executing") or sent into after its return.
    busy = reentered_error("coroutine", lambda c: c.send(None))
    assert busy == ("raise", (ValueError, "coroutine already executing",
                              ("coroutine already executing",), None, None, None))
    twin = py_yield_now(1)
    send_loop_trace(twin)
    reused = outcome(twin.send, None)
    assert reused[0] == "raise" and reused[1][0] is RuntimeError
    n = 5_000
    for _ in range(10):
        c = h.yield_now(n)
        per_thread = race_steps(c, lambda c: c.send(None), 6,
                                lambda o: o[0] == "stop" or o == reused)
        flat = collections.Counter(o for t in per_thread for o in t)
        assert flat[("return", None)] == n
        assert flat[("stop", n)] == 1
        assert set(flat) <= {("return", None), ("stop", n), busy, reused}
        assert flat[reused] == 5
        assert inspect.getcoroutinestate(c) == inspect.CORO_CLOSED


class Box:
    pass


def churn(k, rounds, results):
    """One thread's share of test_create_drive_drop_under_gc: native objects
    and their twins made, run to the end (or left suspended) and dropped."""
    out = []
    for i in range(rounds):
        out.append((send_loop_trace(h.yield_now(3)), send_loop_trace(py_yield_now(3))))
        out.append((list(h.count(i % 7)), list(py_count(i % 7))))
        g, twin = h.count(5), py_count(5)
        out.append(([next(g), next(g)], [next(twin), next(twin)]))
        del g, twin                          # dropped suspended
        c = h.pending()
        c.send(None)
        del c                                # dropped suspended: its Drop runs
        box = Box()
        box.coro = h.hold(box)               # a cycle through the native state
        box.coro.send(None)
        results["refs"].append(weakref.ref(box))
        del box
        exc = KeyError(k, i)
        out.append((send_loop_trace(h.fail(exc)), send_loop_trace(py_fail(exc))))

    async def gathered(await_all, ready):
        return await asyncio.gather(
            *(await_all(ready(j), h.yield_now(j % 3), h.sleep(0, j)) for j in range(40)))

    async def py_gathered(await_all, ready):
        return await asyncio.gather(
            *(await_all(ready(j), py_yield_now(j % 3), py_sleep(0, j)) for j in range(40)))

    out.append((asyncio.run(gathered(h.await_all, h.ready)),
                asyncio.run(py_gathered(py_await_all, py_ready))))
    results[k] = out


async def py_fail(exc):
    raise exc


async def py_ready(value):
    return value


async def py_await_all(*aws):
    return [await aw for aw in aws]


def test_create_drive_drop_under_gc():
    # 4 threads make, run and drop native coroutines and generators (some
    # left suspended, some in cycles only the GC frees) while a fifth calls
    # gc.collect() in a loop: each result equals its twin's, and every Rust
    # future and iterator is dropped in the end.
    nthreads, rounds = 4, 300
    drops, gen_drops = h.drops(), h.gen_drops()
    results = {"refs": []}
    stop = threading.Event()
    collections_done = []

    def collector():
        n = 0
        while not stop.is_set() or n == 0:
            gc.collect()
            n += 1
            stop.wait(0.002)
        collections_done.append(n)

    gc_thread = threading.Thread(target=collector)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        gc_thread.start()
        try:
            run_threads(churn, nthreads, rounds, results)
        finally:
            stop.set()
            gc_thread.join()
        gc.collect()
    assert collections_done and collections_done[0] >= 1
    for k in range(nthreads):
        for native, twin in results[k]:
            assert native == twin
    assert results[0][-1][0] == [[j, j % 3, j] for j in range(40)]
    assert all(ref() is None for ref in results["refs"])
    assert len(results["refs"]) == nthreads * rounds
    assert h.drops() - drops == nthreads * rounds                 # pending()
    # count(): i % 7 run to the end and count(5) left suspended, each round.
    assert h.gen_drops() - gen_drops == 2 * nthreads * rounds


def thrown():
    return ValueError("thrown")


COROUTINE_OPS = {
    "send": lambda c: c.send(None),
    "close": lambda c: c.close(),
    "throw": lambda c: c.throw(thrown()),
    "throw-exit": lambda c: c.throw(GeneratorExit),
}
GENERATOR_OPS = {
    "send": next,
    "close": lambda g: g.close(),
    "throw": lambda g: g.throw(thrown()),
    "throw-exit": lambda g: g.throw(GeneratorExit),
}


def states_of(make, kind, n):
    """The object in each state it can be in: (name, factory)."""
    step = next if kind == "generator" else (lambda c: c.send(None))

    def after(k):
        def f():
            obj = make()
            for _ in range(k):
                outcome(step, obj)
            return obj
        return f

    def closed():
        obj = make()
        step(obj)
        obj.close()
        return obj

    def thrown_into():
        obj = make()
        step(obj)
        outcome(obj.throw, thrown())
        return obj

    return [(f"after {k} steps", after(k)) for k in range(n + 2)] + [
        ("closed", closed), ("thrown", thrown_into)]


def reachable_outcomes(make, kind, n, ops):
    """For each operation, what it gives in any state of the object (without
    a race), and the state it leaves."""
    table = {}
    for name, op in ops.items():
        for state, factory in states_of(make, kind, n):
            obj = factory()
            o = outcome(op, obj)
            st = (inspect.getgeneratorstate(obj) if kind == "generator"
                  else inspect.getcoroutinestate(obj))
            table[name, state] = (o, st)
            obj.close()
    return table


def race_ops(obj, ops, plan, busy, done, after):
    """Threads calling the operations of `plan` (one name per thread) on
    obj at once.  The `send` threads step until `done(outcome)`; the others
    wait until the steps so far reach `after` (or the steppers are done),
    then call their operation, retrying while it gets `busy`."""
    per_thread = [[] for _ in plan]
    steps = [0]
    steppers_left = [plan.count("send")]
    lock = threading.Lock()
    go = threading.Event()
    if after == 0:
        go.set()

    def worker(k):
        op = ops[plan[k]]
        if plan[k] != "send":
            go.wait()
        while True:
            o = outcome(op, obj)
            per_thread[k].append(o)
            if plan[k] == "send":
                with lock:
                    steps[0] += 1
                    finished = done(o)
                    if finished:
                        steppers_left[0] -= 1
                    if steps[0] >= after or not steppers_left[0]:
                        go.set()
                if finished:
                    return
            elif o != busy:
                return

    run_threads(worker, len(plan))
    return per_thread


@pytest.mark.parametrize("kind", ["coroutine", "generator"])
def test_close_and_throw_race_send(kind):
    # Two threads step the native object while a third closes it and a
    # fourth throws into it (ValueError or GeneratorExit).  Each call gives
    # only what the twin gives for that call in some state (or "already
    # executing"), and the object ends closed, as the twin does.
    n = 40
    if kind == "coroutine":
        make, make_twin, ops = (lambda: h.yield_now(n)), (lambda: py_yield_now(n)), COROUTINE_OPS
        closed_state = inspect.CORO_CLOSED
        get_state = inspect.getcoroutinestate
    else:
        make, make_twin, ops = (lambda: h.count(n)), (lambda: py_count(n)), GENERATOR_OPS
        closed_state = inspect.GEN_CLOSED
        get_state = inspect.getgeneratorstate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # never-awaited twins
        twin_table = reachable_outcomes(make_twin, kind, n, ops)
        # Without a race the native object already agrees with its twin.
        assert reachable_outcomes(make, kind, n, ops) == twin_table
    allowed = collections.defaultdict(set)
    for (name, _), (o, _) in twin_table.items():
        allowed[name].add(o)
    busy = reentered_error(kind, ops["send"])
    for name in ops:
        assert reentered_error(kind, ops[name]) == busy
    # A step that ends the object: return/StopIteration, or the error of a
    # step after the end.
    ends = {o for (name, st), (o, _) in twin_table.items()
            if name == "send" and st in (f"after {n} steps", f"after {n + 1} steps",
                                         "closed", "thrown")}

    for throw in ("throw", "throw-exit"):
        plan = ["send", "send", "close", throw]
        for i in range(100):
            obj = make()
            per_thread = race_ops(obj, ops, plan, busy, lambda o: o in ends, i % (n + 5))
            for name, got in zip(plan, per_thread):
                assert set(got) <= allowed[name] | {busy}, name
            assert get_state(obj) == closed_state
            # What the two steppers got, in order: items 0, 1, 2, ... (the
            # generator) or None (the coroutine's bare yields), never twice.
            values = [v for got in per_thread[:2] for kind_, v in got if kind_ == "return"]
            if kind == "generator":
                assert sorted(values) == list(range(len(values)))
            else:
                assert values == [None] * len(values) and len(values) <= n


async def watched(k, handoff):
    """Native coroutines suspended in this thread's loop, each awaiting a
    future that another thread resolves after inspecting it, while more
    native coroutines (Rust sleeps woken by a Rust thread, bare yields) run
    in the same loop meanwhile."""
    loop = asyncio.get_running_loop()
    results = []
    for i in range(40):
        fut = loop.create_future()
        c = AWAIT[k % 2](fut)
        handoff.put((c, fut, loop, (k, i)))
        results += await asyncio.gather(c, h.sleep(0.0002, i), h.yield_now(3),
                                        h.await_(asyncio.sleep(0, -i)))
    handoff.put(None)
    return results


def py_await_(aw):
    async def await_(aw):
        return await aw
    return await_(aw)


AWAIT = [h.await_, py_await_]


def inspect_suspended(c):
    """What another thread sees of a coroutine suspended in `await fut`."""
    f = c.cr_frame
    seen = (inspect.getcoroutinestate(c), c.cr_running, type(c.cr_await).__name__,
            f.f_code is c.cr_code, type(f.f_lineno), f.f_back,
            len(traceback.format_stack(f)), len(traceback.extract_stack(f)))
    return seen


def test_inspecting_a_native_coroutine_suspended_in_another_threads_loop():
    # Two threads run event loops in which native coroutines (and, for one
    # thread, their async def twins) wait for a future; two other threads
    # read each waiting coroutine's state, frame, line, delegate and stack,
    # as a debugger would, then resolve the future from their thread
    # (call_soon_threadsafe), while the loop keeps running other native
    # coroutines.  Each inspection gives what the twin's gives, and the
    # loops' results are the expected ones.
    #
    # Not done: reading cr_await / cr_frame of a coroutine while another
    # thread is running it, or walking other threads' stacks
    # (sys._current_frames() then traceback.format_stack()).  Both segfault
    # the unpatched 3.13t (build/cpython-pristine-ft) with async def
    # coroutines alone, in _PyGen_yf (cr_await) and traceback.walk_stack
    # (f_back): races of 3.13t itself, not of native frames.
    handoffs = [queue.Queue() for _ in range(2)]
    results = {}
    seen = {0: [], 1: []}

    def worker(k):
        if k < 2:
            results[k] = asyncio.run(watched(k, handoffs[k]))
            return
        q = handoffs[k - 2]
        while (item := q.get()) is not None:
            c, fut, loop, value = item
            # Resolved only once the coroutine awaits it.
            while inspect.getcoroutinestate(c) != inspect.CORO_SUSPENDED:
                time.sleep(0.0001)
            seen[k - 2].append((c.cr_code.co_flags & inspect.CO_NATIVE != 0,
                                inspect_suspended(c)))
            loop.call_soon_threadsafe(fut.set_result, value)

    run_threads(worker, 4)
    for k in range(2):
        expected = []
        for i in range(40):
            expected += [(k, i), i, 3, -i]
        assert results[k] == expected
    native = {s for is_native, s in seen[0]}
    twin = {s for is_native, s in seen[1]}
    assert all(is_native for is_native, _ in seen[0])
    assert not any(is_native for is_native, _ in seen[1])
    assert len(seen[0]) == len(seen[1]) == 40
    assert native == twin == {
        (inspect.CORO_SUSPENDED, False, "FutureIter", True, int, None, 1, 1)}
