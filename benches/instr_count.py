"""Instruction counts (valgrind --tool=callgrind): a measure that machine
load does not change, beside the pyperf timings.

    python benches/instr_count.py suite --out instr.json [--work DIR]
    python benches/instr_count.py pyperformance --patched PY --pristine PY \\
        --benchmarks DATA_FILES_BENCHMARKS_DIR --out instr-pp.json [--work DIR]
    python benches/instr_count.py run-case CASE IMPL LOOPS      (what valgrind runs)
    python benches/instr_count.py run-bm SCRIPT LOOPS [ARGS...] (likewise)

Each measurement runs the program twice under callgrind, with LOOPS = L1
and L2 outer iterations (each run first does one untimed iteration, so
that both include the same warm-up and specialization), and reports
(Ir(L2) - Ir(L1)) / ((L2 - L1) * inner): the instructions of one unit,
without interpreter start-up, imports and warm-up.
"""

import argparse
import json
import os
import re
import runpy
import subprocess
import sys
import tempfile
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))

# The key ratios (the targets) and their context: (case, implementations).
SUITE = [
    ("create_send", ("async_def", "native", "pyo3", "cython")),
    ("await_from_async_def", ("async_def", "native", "pyo3", "cython")),
    ("asyncio_run_awaits", ("async_def", "native", "pyo3")),
    ("suspend_resume", ("async_def", "native", "pyo3")),
    ("await_python_from", ("async_def", "native", "cython")),
    ("chain5", ("async_def", "native", "cython")),
    ("generator", ("async_def", "native", "pyo3", "cython")),
]
# Outer iterations per run, per case (small: callgrind is ~50x slower).
SUITE_LOOPS = {
    "create_send": (2_000, 12_000),
    "await_from_async_def": (2, 12),
    "asyncio_run_awaits": (1, 3),
    "suspend_resume": (1, 2),
    "await_python_from": (2, 12),
    "chain5": (2, 7),
    "generator": (1, 3),
}

# pyperformance benchmarks counted on both builds: (name, script dir, args,
# L1, L2).
PYPERFORMANCE = [
    ("coroutines", "bm_coroutines", (), 1, 3),
    ("generators", "bm_generators", (), 1, 3),
    ("async_generators", "bm_async_generators", (), 1, 3),
    ("async_tree_none", "bm_async_tree", ("none",), 1, 2),
    ("async_tree_eager", "bm_async_tree", ("eager",), 1, 2),
]


# ---------------------------------------------------------------------------
# What runs under valgrind.

def run_case(case, impl, loops):
    sys.path.insert(0, HERE)
    import coro_bench as cb

    ns, why = cb.load_impl(impl)
    if ns is None:
        sys.exit(why)
    func, _inner, needs, _ = cb.CASES[case]
    for fn in needs:
        if not hasattr(ns, fn):
            sys.exit(cb.missing_note(impl, fn))
    func(1, ns)        # warm-up, in both runs
    func(loops, ns)


class _FakeRunner:
    """Just enough of pyperf.Runner to run a pyperformance benchmark script
    in-process: the time function runs once as warm-up, then with LOOPS."""

    loops = 1

    def __init__(self, *args, add_cmdline_args=None, **kwargs):
        self.argparser = argparse.ArgumentParser()
        self.metadata = {}
        self.args = None

    def parse_args(self, args=None):
        self.args = self.argparser.parse_args(args)
        return self.args

    def bench_time_func(self, name, func, *args, inner_loops=None):
        func(1, *args)
        func(self.loops, *args)

    def bench_async_func(self, name, func, *args, inner_loops=None, loop_factory=None):
        import asyncio

        async def main(loops):
            for _ in range(loops):
                await func(*args)

        asyncio.run(main(1))
        asyncio.run(main(self.loops))

    def bench_func(self, name, func, *args, inner_loops=None):
        func(*args)
        for _ in range(self.loops):
            func(*args)


def run_bm(script, loops, args):
    fake = types.ModuleType("pyperf")
    fake.Runner = _FakeRunner
    fake.perf_counter = time.perf_counter
    _FakeRunner.loops = loops
    sys.modules["pyperf"] = fake
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


# ---------------------------------------------------------------------------
# Drivers.

def callgrind_ir(argv, work, tag):
    """Total instructions of running argv under callgrind."""
    out = os.path.join(work, f"callgrind.{tag}.out")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
           "--dump-instr=no", "--compress-strings=no", *argv]
    env = dict(os.environ, PYTHONHASHSEED="0")
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed under callgrind:\n{r.stderr[-3000:]}")
    with open(out) as f:
        for line in f:
            m = re.match(r"(?:summary|totals):\s+(\d+)", line)
            if m:
                return int(m.group(1))
    raise RuntimeError(f"no totals in {out}")


def per_unit(argv_for, l1, l2, units, work, tag):
    a = callgrind_ir(argv_for(l1), work, f"{tag}.{l1}")
    b = callgrind_ir(argv_for(l2), work, f"{tag}.{l2}")
    return (b - a) / ((l2 - l1) * units)


def cmd_suite(opts):
    sys.path.insert(0, HERE)
    import coro_bench as cb

    os.makedirs(opts.work, exist_ok=True)
    results = {}
    for case, impls in SUITE:
        _func, inner, needs, _ = cb.CASES[case]
        l1, l2 = SUITE_LOOPS[case]
        for impl in impls:
            ns, why = cb.load_impl(impl)
            if ns is None or not all(hasattr(ns, fn) for fn in needs):
                print(f"{case}/{impl}: skipped", flush=True)
                continue
            t0 = time.monotonic()
            ir = per_unit(
                lambda n: [sys.executable, __file__, "run-case", case, impl, str(n)],
                l1, l2, inner, opts.work, f"{case}.{impl}")
            results.setdefault(case, {})[impl] = ir
            print(f"{case}/{impl}: {ir:,.0f} instructions per unit "
                  f"({time.monotonic() - t0:.0f} s)", flush=True)
    with open(opts.out, "w") as f:
        json.dump(results, f, indent=1)


def cmd_pyperformance(opts):
    os.makedirs(opts.work, exist_ok=True)
    results = {}
    for name, bm_dir, args, l1, l2 in PYPERFORMANCE:
        script = os.path.join(opts.benchmarks, bm_dir, "run_benchmark.py")
        for build, python in (("patched", opts.patched), ("pristine", opts.pristine)):
            t0 = time.monotonic()
            ir = per_unit(
                lambda n: [python, __file__, "run-bm", script, str(n), *args],
                l1, l2, 1, opts.work, f"{name}.{build}")
            results.setdefault(name, {})[build] = ir
            print(f"{name} ({build}): {ir:,.0f} instructions per loop "
                  f"({time.monotonic() - t0:.0f} s)", flush=True)
        r = results[name]
        print(f"{name}: patched/pristine = {r['patched'] / r['pristine']:.4f}", flush=True)
    with open(opts.out, "w") as f:
        json.dump(results, f, indent=1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("suite")
    s.add_argument("--out", required=True)
    s.add_argument("--work", default=tempfile.gettempdir())
    s = sub.add_parser("pyperformance")
    s.add_argument("--patched", required=True)
    s.add_argument("--pristine", required=True)
    s.add_argument("--benchmarks", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--work", default=tempfile.gettempdir())
    s = sub.add_parser("run-case")
    s.add_argument("case")
    s.add_argument("impl")
    s.add_argument("loops", type=int)
    s = sub.add_parser("run-bm")
    s.add_argument("script")
    s.add_argument("loops", type=int)
    s.add_argument("args", nargs="*")
    opts = p.parse_args()
    if opts.cmd == "suite":
        cmd_suite(opts)
    elif opts.cmd == "pyperformance":
        cmd_pyperformance(opts)
    elif opts.cmd == "run-case":
        run_case(opts.case, opts.impl, opts.loops)
    else:
        run_bm(opts.script, opts.loops, opts.args)


if __name__ == "__main__":
    main()
