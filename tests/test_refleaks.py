"""Reference counts before and after: the harness must not leak.

Runs only on a debug interpreter (``--with-pydebug``: ``sys.gettotalrefcount``
exists only there), i.e. ``build/venv-debug/bin/python -m pytest
tests/test_refleaks.py`` after ``scripts/build-cpython --debug`` and
``scripts/build-harness --debug``; ``scripts/test`` runs it in its
``refleaks`` phase.  Elsewhere every test is skipped.

Each check runs a scenario the way ``python -m test -R 3:3`` runs a test:
three warm-up runs (caches, interned strings, free lists settle), then
three measured runs, each between two full collections; it fails when
every measured run leaves more references than it found (regrtest's rule,
which tolerates a cache that grows once) -- for a scenario of
``test_loops.py``, more than its ``async def`` twin leaves under the same
runtime.  The scenarios are those of
``test_loops.py`` (native side) under every runtime, plus the probe's
operations driven by hand: send, throw, close, finalization, panics.
"""

import asyncio
import gc
import sys
import warnings

import pytest

import pycoro_harness as h
from loops import NATIVE, TWIN, run_raw
from test_loops import SCENARIOS

pytestmark = pytest.mark.skipif(
    not hasattr(sys, "gettotalrefcount"),
    reason="needs a debug build (scripts/build-cpython --debug; build/venv-debug)")

WARMUPS = 3
RUNS = 3


def total_refs():
    # As regrtest's -R does between runs (Lib/test/libregrtest/refleak.py):
    # the type attribute cache holds a strong reference to each name it
    # caches, so a name built per lookup anywhere in a runtime (asyncio's
    # and trio's failure paths build some, for the async def twin too)
    # adds a reference per run until the cache's slots are all taken.
    # Without the clear, scenario and twin filled it at different rates
    # and gather_failure failed one CI run in several ([1, 1, 1]).
    sys._clear_internal_caches()
    gc.collect()
    return sys.gettotalrefcount()


def deltas(fn):
    """Reference-count deltas of RUNS calls of fn, after WARMUPS calls."""
    # The totals go into a list made beforehand, over objects a store frees:
    # each store then adds and removes one reference (a list that grows, or
    # a variable bound to a new int, would count as a leak of its own).
    totals = [float(i) for i in range(RUNS + 1)]
    with warnings.catch_warnings():
        # Never-awaited coroutines and ignored GeneratorExit are part of
        # some scenarios; the warnings registry would grow otherwise.
        warnings.simplefilter("ignore")
        for _ in range(WARMUPS):
            fn()
        totals[0] = total_refs()
        for i in range(RUNS):
            fn()
            totals[i + 1] = total_refs()
    return [totals[i + 1] - totals[i] for i in range(RUNS)]


def assert_no_leak(fn, twin=None):
    """No leak in fn; with ``twin`` (the async def version), no more than
    the twin leaks (a runtime's own growth, e.g. asyncio.gather's or a trio
    nursery's, is the same for both and is not the harness's)."""
    d = deltas(fn)
    if twin is not None:
        t = deltas(twin)
        d = [x - y for x, y in zip(d, t)]
    assert not all(x >= 1 for x in d), f"references leaked per run: {d}"


def quietly(fn):
    def run():
        try:
            fn()
        except BaseException:  # noqa: BLE001 - the outcome is not the point
            pass
    return run


# The Rust-thread wake-ups once looked like a leak here (about one
# reference per wake-up through an event loop, fading after a few hundred).
# It was CPython's type attribute cache (Objects/typeobject.c,
# _PyType_LookupRef): a 4096-entry table, the slot chosen by the *address*
# of the attribute name, each entry holding a strong reference to its name.
# pyo3's getattr("...") / call_method0("...") with a Rust &str build a new
# str object per call, so each lookup (create_future, call_soon_threadsafe,
# done, set_result on every suspension) parked one more string in the cache
# until it was full.  Threads had nothing to do with it: sys._clear_type_cache()
# before counting made it vanish (total_refs now clears the cache as
# regrtest does, so the scenarios no longer see it).  The harness looks
# names up through pyo3::intern! (one object per name, one cache slot per
# type and name, as the interned co_names of bytecode);
# test_suspension_names_are_interned checks that directly and
# deterministically, since how fast the cache fills depends on where the
# allocator puts the strings.


@pytest.mark.parametrize("name, runtime", [
    pytest.param(name, runtime, id=f"{name}-{runtime}")
    for name, (fn, runtimes) in SCENARIOS.items()
    for runtime in runtimes
    if runtime in ("asyncio", "trio", "send")
])
def test_scenario_does_not_leak(name, runtime):
    scenario = SCENARIOS[name][0]
    assert_no_leak(quietly(lambda: run_raw(runtime, scenario(NATIVE))),
                   quietly(lambda: run_raw(runtime, scenario(TWIN))))


# --- the probe driven by hand -------------------------------------------------

def drive(coro, throw_at=None, exc=None, close_at=None):
    for i in range(1000):
        try:
            if i == throw_at:
                coro.throw(exc)
            elif i == close_at:
                coro.close()
                return
            else:
                coro.send(None)
        except BaseException:  # noqa: BLE001
            return


HAND = {
    "ready": lambda: drive(h.ready(object())),
    "fail": lambda: drive(h.fail(ValueError("x"))),
    "fail_stop_iteration": lambda: drive(h.fail(StopIteration("x"))),
    "yield_now": lambda: drive(h.yield_now(3)),
    "await_python": lambda: drive(h.await_(asyncio.sleep(0, "v"))),
    "await_native": lambda: drive(h.await_all(h.ready(1), h.yield_now(1))),
    "catch": lambda: drive(h.catch(h.fail(KeyError("k")), LookupError)),
    "throw_at_rust_wait": lambda: drive(h.yield_now(3), 1, ValueError("t")),
    "throw_caught_by_rust": lambda: drive(h.catch_yield(3, ValueError), 1, ValueError("t")),
    "throw_stop_iteration": lambda: drive(h.catch_yield(3, RuntimeError), 1, StopIteration()),
    "throw_at_python_await": lambda: drive(h.catch(asyncio.sleep(0), KeyError), 1, KeyError()),
    "close_suspended": lambda: drive(h.yield_now(3), close_at=1),
    "close_created": lambda: drive(h.ready(1), close_at=0),
    "close_pending_future": lambda: drive(h.pending(), close_at=1),
    "dealloc_suspended": lambda: h.pending().send(None),
    "never_awaited": lambda: h.await_(h.ready(1)),
    "panic": lambda: drive(h.panic("boom")),
    "hold_cycle": lambda: _hold_cycle(),
    "sleep_thread": lambda: drive(h.sleep(0.001, "late")),
}


def _hold_cycle():
    class Box:
        pass
    box = Box()
    box.coro = h.hold(box)


@pytest.mark.parametrize("name", sorted(HAND))
def test_probe_operation_does_not_leak(name):
    assert_no_leak(HAND[name])


def cached_names(fn):
    """References that CPython's type attribute cache holds after fn()
    (what sys._clear_type_cache() releases), starting from an empty cache;
    after one warm-up call (first-use caches, imports)."""
    fn()
    sys._clear_type_cache()
    gc.collect()
    fn()
    gc.collect()
    before = sys.gettotalrefcount()
    sys._clear_type_cache()
    return before - sys.gettotalrefcount()


@pytest.mark.parametrize("runtime", ["asyncio", "trio"])
def test_suspension_names_are_interned(runtime):
    # Each wake-up from a Rust thread suspends through the loop's future
    # (asyncio) or a TrioWait (trio).  Looking up a fresh str per attribute
    # access would park one string per lookup in the type cache: 40
    # wake-ups, ~100 references more than the twin.  Interned names hold
    # one slot per type and name whatever the number of wake-ups.
    def program(ops):
        async def main():
            for _ in range(40):
                await ops.sleep(0.0005)
        return main
    native = cached_names(lambda: run_raw(runtime, program(NATIVE)))
    twin = cached_names(lambda: run_raw(runtime, program(TWIN)))
    assert native - twin < 20, (native, twin)


def test_a_leak_is_detected():
    # The check itself can fail: a list that keeps growing is a leak.
    kept = []
    d = deltas(lambda: kept.append(object()))
    assert all(x >= 1 for x in d), d
