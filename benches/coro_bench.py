"""pyperf suite: native coroutines against async def, PyO3 and Cython.

    build/venv-bench/bin/python benches/coro_bench.py -o results.json [pyperf options]
    build/venv-bench/bin/python benches/coro_bench.py --list

Every case runs the same driver code over one "implementation", a namespace
of functions with the same meaning:

    ready(value)    async def ready(value): return value
    await_(aw)      async def await_(aw): return await aw
    yield_now(n)    async def yield_now(n): for _ in range(n): await asyncio.sleep(0)
    count(n)        def count(n): yield from range(n)   (a generator)

    async_def   the definitions above, in Python (the reference)
    native      pycoro_harness (native frames, this project)
    pyo3        pyo3_baseline: PyO3 0.30 `experimental-async` (benches/pyo3_baseline)
    cython      cybench: Cython (benches/cython_baseline), Cython's own types
    cython_native  cybench_native: the same file compiled by the patched
                Cython (cython-patches/), CPython's types with native frames
    capi        cfloor: the same functions written directly in C on the
                native-frame API, with the least work a binding can do
                (benches/cfloor/cfloor.c): the floor of the C API, without
                the Rust harness
    pyo3_native pyo3_async_example: PyO3 0.30.1's own `#[pyfunction] async
                fn` with the patched PyO3's `native-coroutines` feature
                (examples/pyo3-async; its await_py is await_); only when
                named in --impls (scripts/bench-pyo3)

A benchmark is named CASE/IMPL; benches/report.py turns a run into ratios to
CASE/async_def of the same run.  Cases an implementation cannot express are
skipped with a note (written with --notes FILE).  The same case functions
run once, outside pyperf, under callgrind (benches/instr_count.py).
"""

import asyncio
import json
import sys
import time
import types

# ---------------------------------------------------------------------------
# The reference implementation.


async def ready(value):
    return value


async def await_(aw):
    return await aw


async def yield_now(n):
    for _ in range(n):
        await asyncio.sleep(0)
    return n


def count(n):
    for i in range(n):
        yield i


ASYNC_DEF = types.SimpleNamespace(
    ready=ready, await_=await_, yield_now=yield_now, count=count)

# ---------------------------------------------------------------------------
# Drivers: plain Python, the same for every implementation.


async def await_many(ready, n):
    for _ in range(n):
        await ready(None)


async def await_python_many(await_, n):
    # The awaited object is always an async def coroutine: the case
    # measures awaiting a *Python* coroutine from the implementation's code.
    for _ in range(n):
        await await_(ready(None))


async def chain5_many(await_, ready_, n):
    for _ in range(n):
        await await_(await_(await_(await_(ready_(None)))))


def drive(coro):
    """Run a coroutine that never suspends with one send(None)."""
    try:
        coro.send(None)
    except StopIteration as e:
        return e.value
    raise RuntimeError("the driver suspended")


# ---------------------------------------------------------------------------
# Cases: f(loops, ns) -> seconds for `loops` outer iterations.

AWAITS = 10_000     # awaits per asyncio.run
SUSPENDS = 10_000   # suspensions per asyncio.run
INNER = 1_000       # awaits per send-driven driver call
ITEMS = 100_000     # items per generator


def case_create_send(loops, ns):
    ready_ = ns.ready
    t0 = time.perf_counter()
    for _ in range(loops):
        c = ready_(None)
        try:
            c.send(None)
        except StopIteration:
            pass
    return time.perf_counter() - t0


def case_asyncio_run_awaits(loops, ns):
    ready_ = ns.ready
    t0 = time.perf_counter()
    for _ in range(loops):
        asyncio.run(await_many(ready_, AWAITS))
    return time.perf_counter() - t0


def case_await_from_async_def(loops, ns):
    ready_ = ns.ready
    t0 = time.perf_counter()
    for _ in range(loops):
        drive(await_many(ready_, INNER))
    return time.perf_counter() - t0


def case_suspend_resume(loops, ns):
    yield_now_ = ns.yield_now
    t0 = time.perf_counter()
    for _ in range(loops):
        asyncio.run(yield_now_(SUSPENDS))
    return time.perf_counter() - t0


def case_await_python_from(loops, ns):
    await__ = ns.await_
    t0 = time.perf_counter()
    for _ in range(loops):
        drive(await_python_many(await__, INNER))
    return time.perf_counter() - t0


def case_chain5(loops, ns):
    await__, ready_ = ns.await_, ns.ready
    t0 = time.perf_counter()
    for _ in range(loops):
        drive(chain5_many(await__, ready_, INNER))
    return time.perf_counter() - t0


def case_generator(loops, ns):
    count_ = ns.count
    t0 = time.perf_counter()
    for _ in range(loops):
        for _ in count_(ITEMS):
            pass
    return time.perf_counter() - t0


# name -> (function, inner loops (the unit reported), needed functions, what)
CASES = {
    "create_send": (case_create_send, 1, ("ready",),
                    "create + complete a noop coroutine, send(None) loop"),
    "asyncio_run_awaits": (case_asyncio_run_awaits, AWAITS, ("ready",),
                           "asyncio.run of 10,000 awaits of a noop coroutine in one task (per await)"),
    "await_from_async_def": (case_await_from_async_def, INNER, ("ready",),
                             "`await noop()` from async def, no event loop (per await)"),
    "suspend_resume": (case_suspend_resume, SUSPENDS, ("yield_now",),
                       "one suspend + resume through the asyncio loop (per suspension)"),
    "await_python_from": (case_await_python_from, INNER, ("await_",),
                          "the implementation's await_ awaits an async def coroutine (per await)"),
    "chain5": (case_chain5, INNER, ("await_", "ready"),
               "5-deep await chain: await_(await_(await_(await_(ready(None))))) (per chain)"),
    "generator": (case_generator, ITEMS, ("count",),
                  "a generator yielding 100,000 items, consumed by a for loop (per item)"),
}

IMPLS = ("async_def", "native", "pyo3", "cython", "cython_native", "capi")
# Accepted by --impls, not run by default.
EXTRA_IMPLS = ("pyo3_native",)


def load_impl(name):
    """(namespace, None) or (None, why it is missing)."""
    if name == "async_def":
        return ASYNC_DEF, None
    module = {"native": "pycoro_harness", "pyo3": "pyo3_baseline",
              "cython": "cybench", "cython_native": "cybench_native",
              "capi": "cfloor", "pyo3_native": "pyo3_async_example"}[name]
    try:
        mod = __import__(module)
    except ImportError as e:
        return None, f"cannot import {module}: {e}"
    if name == "pyo3_native":
        probe = mod.ready(None)
        probe.close()
        if type(probe) is not types.CoroutineType:
            return None, f"{module} does not make native coroutines here"
        return types.SimpleNamespace(ready=mod.ready, yield_now=mod.yield_now,
                                     await_=mod.await_py), None
    return mod, None


def missing_note(impl, fn):
    if impl == "pyo3" and fn == "await_":
        return ("PyO3 0.30's Coroutine cannot await a Python awaitable "
                "(no await_ to write)")
    if impl == "native" and fn == "count":
        return ("pycoro_harness has no native generator count(n) yet "
                "(being added in parallel)")
    return f"{impl} has no {fn}()"


def plan(impls, cases):
    """[(bench name, case, impl, ns)], {name: skip note}."""
    runs, notes = [], {}
    loaded = {impl: load_impl(impl) for impl in impls}
    for case in cases:
        func, inner, needs, _ = CASES[case]
        for impl in impls:
            name = f"{case}/{impl}"
            ns, why = loaded[impl]
            if ns is None:
                notes[name] = why
                continue
            lacking = [fn for fn in needs if not hasattr(ns, fn)]
            if lacking:
                notes[name] = missing_note(impl, lacking[0])
                continue
            runs.append((name, case, impl, ns))
    return runs, notes


def check_results(runs):
    """Each implementation must compute what async def computes: a
    benchmark of something else is worthless."""
    for _name, case, impl, ns in runs:
        if case == "create_send":
            c = ns.ready(42)
            try:
                c.send(None)
            except StopIteration as e:
                assert e.value == 42, (impl, e.value)
            else:
                raise AssertionError(f"{impl}.ready suspended")
        elif case == "suspend_resume":
            assert asyncio.run(ns.yield_now(3)) == 3, impl
        elif case == "await_python_from":
            assert drive(ns.await_(ready(7))) == 7, impl
        elif case == "chain5":
            a = ns.await_
            assert drive(a(a(a(a(ns.ready(5)))))) == 5, impl
        elif case == "generator":
            assert list(ns.count(5)) == list(range(5)), impl


def add_cmdline_args(cmd, args):
    cmd.extend(("--impls", args.impls, "--cases", args.cases))


def main():
    import pyperf

    runner = pyperf.Runner(add_cmdline_args=add_cmdline_args)
    runner.metadata["description"] = "pycoro: native coroutines vs async def, PyO3, Cython"
    p = runner.argparser
    p.add_argument("--impls", default=",".join(IMPLS),
                   help="comma-separated implementations (default: all)")
    p.add_argument("--cases", default=",".join(CASES),
                   help="comma-separated cases (default: all)")
    p.add_argument("--notes", metavar="FILE",
                   help="write the skipped benchmarks and why (JSON)")
    p.add_argument("--list", action="store_true",
                   help="list cases and implementations, then exit")
    args = runner.parse_args()
    if args.list:
        for case, (_, inner, needs, what) in CASES.items():
            print(f"{case:22s} {what}")
        print("implementations:", ", ".join(IMPLS + EXTRA_IMPLS))
        return

    impls = [i for i in args.impls.split(",") if i]
    cases = [c for c in args.cases.split(",") if c]
    for i in impls:
        if i not in IMPLS + EXTRA_IMPLS:
            sys.exit(f"unknown implementation {i!r} (known: {', '.join(IMPLS + EXTRA_IMPLS)})")
    for c in cases:
        if c not in CASES:
            sys.exit(f"unknown case {c!r} (known: {', '.join(CASES)})")
    runs, notes = plan(impls, cases)
    if not args.worker:
        check_results(runs)
        for name, why in notes.items():
            print(f"skipped {name}: {why}", file=sys.stderr)
        if args.notes:
            with open(args.notes, "w") as f:
                json.dump(notes, f, indent=1, sort_keys=True)
    for name, case, impl, ns in runs:
        func, inner, _, _ = CASES[case]
        runner.bench_time_func(name, func, ns, inner_loops=inner)


if __name__ == "__main__":
    main()
