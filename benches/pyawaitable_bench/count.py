"""Callgrind instructions per unit: PyAwaitable (pawbench) beside async def
and the C floor (cfloor), on the cases of benches/coro_bench.py that use
only ready() and await_().

    PYTHONPATH=DIR VENV_PYTHON benches/pyawaitable_bench/count.py [--work W] [--out FILE]
    VENV_PYTHON benches/pyawaitable_bench/count.py run-case CASE IMPL LOOPS  (what valgrind runs)

DIR holds pawbench and cfloor (build.sh --out DIR).  Each count is one
callgrind run of the same case function as benches/instr_count.py's
(coro_bench.CASES, instr_count.SUITE_LOOPS, its toggle and totals), so the
figures compare with benches/RESULTS.md's.  Before counting, every
implementation must compute what async def computes.

create_send is not counted: a PyAwaitable object's first send(None) yields
None (it starts its generator wrapper) where an async def coroutine's
returns, so the case's loop would not complete the object.
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import types

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHES = os.path.dirname(HERE)
sys.path.insert(0, BENCHES)

import coro_bench as cb  # noqa: E402
import instr_count as ic  # noqa: E402

CASES = ("await_from_async_def", "asyncio_run_awaits", "await_python_from", "chain5")
IMPLS = ("async_def", "capi", "pyawaitable")


def load(impl):
    if impl == "pyawaitable":
        import pawbench
        return types.SimpleNamespace(ready=pawbench.ready, await_=pawbench.await_)
    ns, why = cb.load_impl(impl)
    if ns is None:
        sys.exit(why)
    return ns


async def _await(aw):
    return await aw


def check(impl, ns):
    """The same results as async def, awaited from async def (and in a task)."""
    d = cb.drive
    assert d(_await(ns.ready(42))) == 42, impl
    assert d(_await(ns.await_(cb.ready(7)))) == 7, impl
    a = ns.await_
    assert d(_await(a(a(a(a(ns.ready(5))))))) == 5, impl
    assert asyncio.run(_await(ns.await_(asyncio.sleep(0, "slept")))) == "slept", impl


def run_case(case, impl, loops):
    ns = load(impl)
    func = cb.CASES[case][0]
    toggle = ic.Toggle()
    func(1, ns)        # warm-up, as instr_count.run_case
    toggle.start()
    func(loops, ns)
    toggle.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd")
    r = sub.add_parser("run-case")
    r.add_argument("case")
    r.add_argument("impl")
    r.add_argument("loops", type=int)
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "pawbench-cg"))
    p.add_argument("--out", help="write {case: {impl: instructions per unit}} (JSON)")
    opts = p.parse_args()
    if opts.cmd == "run-case":
        run_case(opts.case, opts.impl, opts.loops)
        return

    for impl in IMPLS:
        check(impl, load(impl))
    os.makedirs(opts.work, exist_ok=True)
    ic.build_toggle(opts.work)
    jobs = {}
    for case in CASES:
        loops = ic.SUITE_LOOPS[case]
        for impl in IMPLS:
            jobs[(case, impl)] = (
                [sys.executable, os.path.abspath(__file__), "run-case", case, impl, str(loops)],
                loops * cb.CASES[case][1])
    results = {}
    for (case, impl), ir in ic.run_all(jobs, opts.work).items():
        results.setdefault(case, {})[impl] = ir
    print()
    print(f"{'case':22s} {'async def':>10s} {'C floor':>16s} {'PyAwaitable':>16s}")
    for case in CASES:
        r = results[case]
        base = r["async_def"]
        print(f"{case:22s} {base:10,.0f} {r['capi']:9,.0f} {r['capi'] / base:5.2f}x"
              f" {r['pyawaitable']:9,.0f} {r['pyawaitable'] / base:5.2f}x")
    if opts.out:
        with open(opts.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
