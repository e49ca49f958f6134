"""Instruction counts (valgrind --tool=callgrind): a measure that machine
load does not change, beside the pyperf timings.

    python benches/instr_count.py suite --out instr.json [--work DIR] [--cases A,B] [--impls X,Y]
    python benches/instr_count.py pyperformance --patched PY --pristine PY \
        --benchmarks DATA_FILES_BENCHMARKS_DIR --out instr-pp.json [--work DIR]
        [--only NAME,NAME...]
    python benches/instr_count.py run-case CASE IMPL LOOPS      (what valgrind runs)
    python benches/instr_count.py run-bm SCRIPT LOOPS [ARGS...] (likewise)

Each measurement is one run under `callgrind --instr-atstart=no`: the
program starts, imports and warms up (one untimed iteration, so that the
code is specialized) uninstrumented, then switches the instrumentation on
for LOOPS outer iterations only (benches/cgtoggle.c, a 2-function helper
compiled here and loaded with ctypes), so the count is
Ir / (LOOPS * inner): the instructions of one unit, without start-up.
"""

import argparse
import concurrent.futures
import ctypes
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
    ("create_send", ("async_def", "native", "pyo3", "cython", "cython_native", "capi")),
    ("await_from_async_def", ("async_def", "native", "pyo3", "cython", "cython_native", "capi")),
    ("asyncio_run_awaits", ("async_def", "native", "pyo3", "cython", "cython_native", "capi")),
    ("suspend_resume", ("async_def", "native", "pyo3", "cython", "cython_native", "capi")),
    ("await_python_from", ("async_def", "native", "cython", "cython_native", "capi")),
    ("chain5", ("async_def", "native", "cython", "cython_native", "capi")),
    ("generator", ("async_def", "native", "pyo3", "cython", "cython_native", "capi")),
]
# Outer iterations measured, per case (callgrind is ~50x slower).
SUITE_LOOPS = {
    "create_send": 5_000,
    "await_from_async_def": 5,
    "asyncio_run_awaits": 1,
    "suspend_resume": 1,
    "await_python_from": 5,
    "chain5": 3,
    "generator": 1,
}

# pyperformance benchmarks counted on both builds: (name, script dir, args,
# loops measured).
PYPERFORMANCE = [
    ("coroutines", "bm_coroutines", (), 2),
    ("generators", "bm_generators", (), 2),
    ("async_generators", "bm_async_generators", (), 1),
    ("async_tree_none", "bm_async_tree", ("none",), 1),
    ("async_tree_eager", "bm_async_tree", ("eager",), 1),
    # Ordinary code, no generator or coroutine in the measured loop (does
    # the patch cost anything elsewhere?).
    ("richards", "bm_richards", (), 2),
    ("nbody", "bm_nbody", (), 1),
    ("float", "bm_float", (), 1),
    ("deltablue", "bm_deltablue", (), 5),
    ("json_dumps", "bm_json_dumps", (), 3),
    ("regex_v8", "bm_regex_v8", (), 2),
]


# ---------------------------------------------------------------------------
# What runs under valgrind.

class Toggle:
    """cg_start()/cg_stop() of benches/cgtoggle.c (no-ops outside valgrind)."""

    def __init__(self):
        lib = ctypes.CDLL(os.environ["PYCORO_CGTOGGLE"])
        self.start, self.stop = lib.cg_start, lib.cg_stop


def build_toggle(work):
    """Compile benches/cgtoggle.c into WORK (once); its path."""
    src = os.path.join(HERE, "cgtoggle.c")
    lib = os.path.join(work, "libcgtoggle.so")
    if not os.path.exists(lib) or os.path.getmtime(lib) < os.path.getmtime(src):
        subprocess.run([os.environ.get("CC", "cc"), "-O2", "-shared", "-fPIC",
                        "-o", lib, src], check=True)
    return lib


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
    toggle = Toggle()
    func(1, ns)        # warm-up: specialization, caches, first-call costs
    toggle.start()
    func(loops, ns)
    toggle.stop()


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

    def bench_func(self, name, func, *args, inner_loops=None):
        # pyperf calls func(*args) once per loop.
        toggle = Toggle()
        func(*args)
        toggle.start()
        for _ in range(self.loops):
            func(*args)
        toggle.stop()

    def bench_time_func(self, name, func, *args, inner_loops=None):
        toggle = Toggle()
        func(1, *args)
        toggle.start()
        func(self.loops, *args)
        toggle.stop()

    def bench_async_func(self, name, func, *args, inner_loops=None, loop_factory=None):
        # As pyperf does: the loops run inside one event loop.
        import asyncio

        toggle = Toggle()

        async def main(loops, measured):
            if measured:
                toggle.start()
            for _ in range(loops):
                await func(*args)
            if measured:
                toggle.stop()

        asyncio.run(main(1, False))
        asyncio.run(main(self.loops, True))


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
    """Instructions counted while the program had instrumentation on."""
    out = os.path.join(work, f"callgrind.{tag}.out")
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
           f"--callgrind-out-file={out}", *argv]
    env = dict(os.environ, PYTHONHASHSEED="0",
               PYCORO_CGTOGGLE=os.path.join(work, "libcgtoggle.so"))
    # Each interpreter must load its own libpython (RUNPATH): an inherited
    # LD_LIBRARY_PATH would give the unpatched one the patched library.
    env.pop("LD_LIBRARY_PATH", None)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed under callgrind:\n{r.stderr[-3000:]}")
    # "totals:" is what was collected; "summary:" stays 0 when the
    # instrumentation starts off.
    with open(out) as f:
        for line in f:
            m = re.match(r"totals:\s+(\d+)", line)
            if m:
                return int(m.group(1))
    raise RuntimeError(f"no totals in {out}")


def run_all(jobs, work):
    """Run {key: (argv, units)} two at a time; {key: Ir per unit}."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(callgrind_ir, argv, work, ".".join(key))
                   for key, (argv, _units) in jobs.items()}
        results = {}
        for key, fut in futures.items():
            results[key] = fut.result() / jobs[key][1]
            print(f"{'/'.join(key)}: {results[key]:,.0f} instructions per unit", flush=True)
    return results


def cmd_suite(opts):
    sys.path.insert(0, HERE)
    import coro_bench as cb

    os.makedirs(opts.work, exist_ok=True)
    build_toggle(opts.work)
    jobs = {}
    suite = SUITE
    if opts.cases or opts.impls:
        # --cases/--impls (scripts/bench-pyo3): every named case over every
        # named implementation.
        cases = opts.cases.split(",") if opts.cases else [c for c, _ in SUITE]
        impls = tuple(opts.impls.split(",")) if opts.impls else cb.IMPLS
        suite = [(c, impls) for c in cases]
    for case, impls in suite:
        _func, inner, needs, _ = cb.CASES[case]
        loops = SUITE_LOOPS[case]
        for impl in impls:
            if opts.impls and impl not in opts.impls.split(","):
                continue
            ns, _why = cb.load_impl(impl)
            if ns is None or not all(hasattr(ns, fn) for fn in needs):
                print(f"{case}/{impl}: skipped", flush=True)
                continue
            jobs[(case, impl)] = (
                [sys.executable, __file__, "run-case", case, impl, str(loops)],
                loops * inner)
    results = {}
    for (case, impl), ir in run_all(jobs, opts.work).items():
        results.setdefault(case, {})[impl] = ir
    with open(opts.out, "w") as f:
        json.dump(results, f, indent=1)


def cmd_pyperformance(opts):
    os.makedirs(opts.work, exist_ok=True)
    build_toggle(opts.work)
    jobs = {}
    only = set(opts.only.split(",")) if opts.only else None
    for name, bm_dir, args, loops in PYPERFORMANCE:
        if only is not None and name not in only:
            continue
        script = os.path.join(opts.benchmarks, bm_dir, "run_benchmark.py")
        for build, python in (("patched", opts.patched), ("pristine", opts.pristine)):
            jobs[(name, build)] = (
                [python, __file__, "run-bm", script, str(loops), *args], loops)
    results = {}
    for (name, build), ir in run_all(jobs, opts.work).items():
        results.setdefault(name, {})[build] = ir
    for name, r in results.items():
        print(f"{name}: patched/pristine = {r['patched'] / r['pristine']:.4f}", flush=True)
    with open(opts.out, "w") as f:
        json.dump(results, f, indent=1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("suite")
    s.add_argument("--out", required=True)
    s.add_argument("--work", default=tempfile.gettempdir())
    s.add_argument("--cases", help="comma-separated cases (default: the suite's)")
    s.add_argument("--impls", help="comma-separated implementations (default: each case's)")
    s = sub.add_parser("pyperformance")
    s.add_argument("--patched", required=True)
    s.add_argument("--pristine", required=True)
    s.add_argument("--benchmarks", required=True)
    s.add_argument("--only", help="comma-separated names of PYPERFORMANCE to count (default: all)")
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
