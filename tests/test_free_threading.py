"""The free-threaded build (3.13t): native coroutines on many threads.

Skipped unless the interpreter is free-threaded (``build/venv-ft``, made by
``scripts/build-cpython --free-threaded`` and ``scripts/build-harness
--free-threaded``).  Each scenario runs an ``async def`` twin beside the
native coroutine and compares.
"""

import asyncio
import sys
import sysconfig
import threading
import types

import pytest

import pycoro_harness as h

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
