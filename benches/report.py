"""Write benches/RESULTS.md from the outputs of scripts/bench.

Run by scripts/bench (see its --help); every input but --coro is optional.
The hand-written analysis of missed targets, benches/analysis.md, is
included as it is.
"""

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys

import pyperf

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import coro_bench as cb  # noqa: E402

IMPL_TITLES = {"async_def": "async def", "native": "native (pycoro)",
               "pyo3": "PyO3 0.30", "cython": "Cython",
               "cython_native": "Cython, native frames", "capi": "C API (floor)"}
# Targets: (bound on native / async def, what the issue calls it).
TARGETS = {
    "create_send": (0.5, "native noop create + complete"),
    "asyncio_run_awaits": (1.1, "await of a native coroutine inside a task"),
    "await_from_async_def": (1.1, "await of a native coroutine from async def"),
    "suspend_resume": (1.0, "one suspend through the loop"),
}


def sh(*cmd):
    # Without LD_LIBRARY_PATH: each interpreter loads its own libpython.
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def fmt_time(seconds):
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if seconds >= scale or unit == "ns":
            v = seconds / scale
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return str(seconds)


def load_suite(path):
    if not path or not os.path.exists(path):
        return {}
    suite = pyperf.BenchmarkSuite.load(path)
    return {b.get_name(): b for b in suite.get_benchmarks()}


def machine_lines(args):
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    osname = ""
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    osname = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return [
        f"- CPU: {cpu or platform.processor()}, {os.cpu_count()} logical CPUs; memory {mem}",
        f"- OS: {osname}, Linux {platform.release()}",
        f"- load average (1, 5, 15 min) at the start: {args.load_start}; at the end: {args.load_end}",
    ]


def version_lines(args):
    lines = []
    rev = sh("git", "-C", REPO, "rev-parse", "--short", "HEAD")
    # RESULTS.md itself is rewritten by every report: not a change to the code.
    dirty = sh("git", "-C", REPO, "status", "--porcelain", "--untracked-files=no",
               "--", ".", ":!benches/RESULTS.md")
    series = []
    try:
        with open(os.path.join(REPO, "cpython-patches", "series")) as f:
            series = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    except OSError:
        pass
    lines.append(f"- pycoro: git {rev}{' (with uncommitted changes)' if dirty else ''}")
    lines.append(f"- patched CPython: {sys.version.split()[0]} + the {len(series)} patches of "
                 f"cpython-patches/series ({', '.join(p.split('-')[0] for p in series)}), "
                 f"release build (`--enable-shared`, no PGO/LTO), `{sys.version}`")
    if args.ft_python and os.path.exists(args.ft_python) and (args.coro_ft or args.instr_ft):
        v = sh(args.ft_python, "-c", "import sys; print(sys.version)")
        lines.append(f"- patched free-threaded CPython (the 3.13t rows): the same patches, `--disable-gil`, `{v}`")
    if args.pristine_python and os.path.exists(args.pristine_python):
        v = sh(args.pristine_python, "-c", "import sys; print(sys.version)")
        lines.append(f"- unpatched CPython: the same tarball and configure options without patches, `{v}`")
    mods = []
    for name in ("pyperf", "Cython", "pyperformance"):
        try:
            mod = __import__(name)
            mods.append(f"{name} {getattr(mod, '__version__', '?')}")
        except ImportError:
            pass
    if args.pyo3_lock and os.path.exists(args.pyo3_lock):
        with open(args.pyo3_lock) as f:
            m = re.search(r'name = "pyo3"\nversion = "([^"]+)"', f.read())
        if m:
            mods.append(f"PyO3 {m.group(1)} (`experimental-async`)")
    rustc = sh("rustc", "--version")
    if rustc:
        mods.append(rustc)
    cc = sh("cc", "--version").splitlines()
    if cc:
        mods.append(cc[0])
    lines.append("- " + "; ".join(mods))
    return lines


def ratio_cell(value, ref):
    if ref is None or value is None:
        return ""
    return f"{value / ref:.2f}x"


def time_cells(benches, notes, case, tag=""):
    """The cells of one row of the time table: each implementation's mean
    ± stdev and its ratio to async def of the same run and build."""
    ref = benches.get(f"{case}/async_def")
    ref_mean = ref.mean() if ref else None
    cells = []
    for impl in cb.IMPLS:
        b = benches.get(f"{case}/{impl}")
        if b is None:
            cells.append("n/a" + (f" [^{impl}-{case}{tag}]" if f"{case}/{impl}" in notes else ""))
            continue
        mean = b.mean()
        sd = b.stdev() if b.get_nvalue() > 1 else 0.0
        cell = f"{fmt_time(mean)} ± {fmt_time(sd)}" if sd else fmt_time(mean)
        if impl != "async_def" and ref_mean:
            cell += f" (**{mean / ref_mean:.2f}x**)"
        cells.append(cell)
    return cells, ref_mean


def instr_cells(per, impls):
    ref = per.get("async_def")
    cells = []
    for impl in impls:
        v = per.get(impl)
        if v is None:
            cells.append("n/a")
        elif impl == "async_def" or not ref:
            cells.append(f"{v:,.0f}")
        else:
            cells.append(f"{v:,.0f} (**{v / ref:.2f}x**)")
    return cells


FT_TAG = "-ft"


def suite_section(args, benches, notes, build_notes, instr, ft=None):
    """ft: None, or {"benches", "notes", "instr"} of the 3.13t run, whose
    rows stand below the default build's, case by case."""
    ft = ft or {}
    ft_benches, ft_notes, ft_instr = ft.get("benches") or {}, ft.get("notes") or {}, ft.get("instr")
    out = ["## Native coroutines against async def, PyO3 and Cython", ""]
    out.append("Mean time per unit (the unit is in the description), ± standard "
               "deviation, and the ratio to async def **of the same run** (and the "
               "same build). Lower is better; a ratio below 1 is faster than async def.")
    if ft_benches:
        out.append("")
        out.append("Each case has a second row, **3.13t**: the same suite on the free-threaded "
                   "build (patched 3.13.5 `--disable-gil`, release; run with `PYTHON_GIL=0`, "
                   "since importing Cython's modules or the C floor, which do not declare "
                   "themselves free-threading safe, would turn the GIL back on), its ratios "
                   "to async def on 3.13t.")
    out.append("")
    header = "| case | " + " | ".join(IMPL_TITLES[i] for i in cb.IMPLS) + " | target (native) |"
    out.append(header)
    out.append("|" + " --- |" * (len(cb.IMPLS) + 2))
    verdicts = []
    for case, (_f, _inner, _needs, what) in cb.CASES.items():
        cells, ref_mean = time_cells(benches, notes, case)
        target = ""
        if case in TARGETS and ref_mean and f"{case}/native" in benches:
            bound, name = TARGETS[case]
            r = benches[f"{case}/native"].mean() / ref_mean
            ok = r <= bound
            target = f"≤ {bound}x: {'met' if ok else '**missed**'}"
            verdicts.append((name, bound, r, ok))
        elif case in TARGETS:
            target = f"≤ {TARGETS[case][0]}x"
        out.append(f"| `{case}`: {what} | " + " | ".join(cells) + f" | {target} |")
        if ft_benches:
            cells, _ = time_cells(ft_benches, ft_notes, case, FT_TAG)
            out.append(f"| `{case}`, **3.13t** | " + " | ".join(cells) + " |  |")
    out.append("")
    for name, why in sorted(notes.items()):
        case, impl = name.split("/")
        out.append(f"[^{impl}-{case}]: {why}")
    for name, why in sorted(ft_notes.items()):
        case, impl = name.split("/")
        out.append(f"[^{impl}-{case}{FT_TAG}]: 3.13t: {why}")
    for key, why in sorted(build_notes.items()):
        out.append(f"- {why}")
    out.append("")
    if verdicts:
        out.append("Targets (time ratio native / async def, same run):")
        out.append("")
        for name, bound, r, ok in verdicts:
            out.append(f"- {name}: {r:.2f}x (target ≤ {bound}x): {'met' if ok else 'MISSED'}")
        out.append("")
    if instr:
        out.append("### Instruction counts (callgrind)")
        out.append("")
        out.append("Instructions per unit under `valgrind --tool=callgrind`, counted "
                   "only while the measured loops run (after start-up and one warm-up "
                   "iteration; benches/instr_count.py), and the ratio to async def.  "
                   "Machine load does not change these; cache misses and branch "
                   "mispredictions are not in them.")
        if ft_instr:
            out.append("The **3.13t** rows are the same counts on the free-threaded build "
                       "(`PYTHON_GIL=0`), ratios to async def on 3.13t.")
        out.append("")
        impls = [i for i in cb.IMPLS
                 if any(i in v for v in instr.values())
                 or any(i in v for v in (ft_instr or {}).values())]
        out.append("| case | " + " | ".join(IMPL_TITLES[i] for i in impls) + " |")
        out.append("|" + " --- |" * (len(impls) + 1))
        for case, per in instr.items():
            out.append(f"| `{case}` | " + " | ".join(instr_cells(per, impls)) + " |")
            if ft_instr and case in ft_instr:
                out.append(f"| `{case}`, **3.13t** | "
                           + " | ".join(instr_cells(ft_instr[case], impls)) + " |")
        out.append("")
    return out


def criterion_section(root):
    rows = []
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) == "new" and "estimates.json" in files:
            with open(os.path.join(dirpath, "benchmark.json")) as f:
                meta = json.load(f)
            with open(os.path.join(dirpath, "estimates.json")) as f:
                est = json.load(f)
            rows.append((meta.get("full_id") or meta.get("title"),
                         est["mean"]["point_estimate"],
                         est["mean"]["confidence_interval"]))
    if not rows:
        return []
    out = ["## The harness's own overhead (criterion)", ""]
    out.append("`cargo bench -p pycoro --bench harness` (benches/harness.rs), "
               "the embedded patched interpreter; mean and its 95% confidence interval.  "
               "`poll/*` is a whole step through CPython (`PyIter_Send`), harness included.")
    out.append("")
    out.append("| benchmark | mean | 95% CI |")
    out.append("| --- | --- | --- |")
    for name, mean, ci in sorted(rows):
        out.append(f"| `{name}` | {fmt_time(mean * 1e-9)} | "
                   f"{fmt_time(ci['lower_bound'] * 1e-9)} to {fmt_time(ci['upper_bound'] * 1e-9)} |")
    out.append("")
    return out


def instr_pp_table(instr_pp):
    out = ["| benchmark | unpatched | patched | patched / unpatched |",
           "| --- | --- | --- | --- |"]
    logs = []
    for n, v in instr_pp.items():
        r = v['patched'] / v['pristine']
        logs.append(math.log(r))
        out.append(f"| {n} | {v['pristine']:,.0f} | {v['patched']:,.0f} | {r:.4f} |")
    if logs:
        out.append(f"| **geometric mean** | | | **{math.exp(sum(logs) / len(logs)):.4f}** |")
    out.append("")
    return out


def pyperformance_section(args, instr_pp, instr_pp_ft=None):
    out = ["## No slowdown for ordinary code: pyperformance, patched vs unpatched", ""]
    patched, pa, pb = (load_suite(p) for p in args.pyperformance)
    names = sorted(set(patched) & set(pa))
    out.append("pyperformance's `coroutines`, `generators`, `async_generators` and "
               "`async_tree*` benchmarks on the patched and the unpatched build "
               "(same tarball, same configure options, same compiler), run "
               "interleaved: unpatched (A), patched, unpatched again (B).  The "
               "noise is what separates the two unpatched runs.")
    out.append("")
    out.append("| benchmark | unpatched A | patched | unpatched B | patched / A | B / A (noise) |")
    out.append("| --- | --- | --- | --- | --- | --- |")
    logs_p, logs_n = [], []
    for n in names:
        a = pa[n].mean()
        p = patched[n].mean()
        b = pb[n].mean() if n in pb else None
        logs_p.append(math.log(p / a))
        if b:
            logs_n.append(math.log(b / a))
        out.append(f"| {n} | {fmt_time(a)} | {fmt_time(p)} | "
                   f"{fmt_time(b) if b else 'n/a'} | {p / a:.3f} | "
                   f"{f'{b / a:.3f}' if b else 'n/a'} |")
    if logs_p:
        gp = math.exp(sum(logs_p) / len(logs_p))
        line = f"| **geometric mean** | | | | **{gp:.3f}** |"
        if logs_n:
            gn = math.exp(sum(logs_n) / len(logs_n))
            line += f" **{gn:.3f}** |"
            spread = max(abs(x) for x in logs_n)
            out.append(line)
            out.append("")
            out.append(f"Patched vs unpatched: geometric mean {100 * (gp - 1):+.1f}% "
                       f"(per benchmark from {100 * (math.exp(min(logs_p)) - 1):+.1f}% to "
                       f"{100 * (math.exp(max(logs_p)) - 1):+.1f}%).  Noise, unpatched vs "
                       f"unpatched: geometric mean {100 * (gn - 1):+.1f}%, per benchmark up "
                       f"to {100 * (math.exp(spread) - 1):.1f}% apart.")
        else:
            out.append(line + " |")
    out.append("")
    for title, path in (("`pyperf compare_to` unpatched A -> patched", args.compare),
                        ("`pyperf compare_to` unpatched A -> unpatched B (noise)", args.noise)):
        if path and os.path.exists(path):
            out.append(f"<details><summary>{title}</summary>")
            out.append("")
            with open(path) as f:
                out.append(f.read().strip())
            out.append("")
            out.append("</details>")
            out.append("")
    if instr_pp:
        out.append("### Instruction counts (callgrind), patched vs unpatched")
        out.append("")
        out.append("Instructions per benchmark loop, counted only while the measured "
                   "loops run (after start-up and one warm-up loop), the benchmarks' own "
                   "code run in-process without pyperf.  Load-independent: this is the "
                   "measure to hold the 1% target against on a shared machine.")
        out.append("")
        out.extend(instr_pp_table(instr_pp))
    if instr_pp_ft:
        out.append("### Instruction counts (callgrind) on the free-threaded build (3.13t), patched vs unpatched")
        out.append("")
        out.append("The same benchmarks and counting, on the `--disable-gil` release builds "
                   "(build/cpython-ft against build/cpython-pristine-ft: same tarball, same "
                   "configure options), made by `scripts/bench --free-threaded`.  No timings: "
                   "the counts are the measure.")
        out.append("")
        out.extend(instr_pp_table(instr_pp_ft))
    return out


def memory_section(path):
    """The bytes of one suspended coroutine (benches/memory.py)."""
    sys.path.insert(0, HERE)
    import memory

    with open(path) as f:
        data = json.load(f)
    return ["## Memory of a suspended coroutine", "",
            "benches/memory.py (its docstring says what each row includes): "
            "`pycoro_harness.sleep` against `async def sleep(seconds, result=None): "
            "await asyncio.sleep(seconds); return result`, each suspended in an "
            "asyncio task.", "", memory.markdown(data), ""]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", default="normal")
    p.add_argument("--coro", required=True)
    p.add_argument("--notes")
    p.add_argument("--build-notes")
    p.add_argument("--instr")
    p.add_argument("--coro-ft", help="the pyperf suite on the free-threaded build")
    p.add_argument("--notes-ft")
    p.add_argument("--instr-ft")
    p.add_argument("--ft-python", help="the free-threaded interpreter (its version line)")
    p.add_argument("--pyperformance", nargs=3, metavar=("PATCHED", "PRISTINE_A", "PRISTINE_B"))
    p.add_argument("--compare")
    p.add_argument("--noise")
    p.add_argument("--instr-pyperformance")
    p.add_argument("--instr-pyperformance-ft")
    p.add_argument("--criterion", help="criterion's output directory")
    p.add_argument("--memory", help="benches/memory.py's JSON")
    p.add_argument("--load-start", default="?")
    p.add_argument("--load-end", default="?")
    p.add_argument("--started", default="?")
    p.add_argument("--pyo3-lock")
    p.add_argument("--pristine-python")
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args()

    benches = load_suite(args.coro)
    notes = {}
    if args.notes and os.path.exists(args.notes):
        with open(args.notes) as f:
            notes = json.load(f)
    build_notes = {}
    if args.build_notes and os.path.exists(args.build_notes):
        with open(args.build_notes) as f:
            for line in f:
                if line.strip():
                    build_notes.update(json.loads(line))
    instr = None
    if args.instr and os.path.exists(args.instr):
        with open(args.instr) as f:
            instr = json.load(f)
    ft = {"benches": load_suite(args.coro_ft), "notes": {}, "instr": None}
    if args.notes_ft and os.path.exists(args.notes_ft):
        with open(args.notes_ft) as f:
            ft["notes"] = json.load(f)
    if args.instr_ft and os.path.exists(args.instr_ft):
        with open(args.instr_ft) as f:
            ft["instr"] = json.load(f)
    instr_pp = None
    if args.instr_pyperformance and os.path.exists(args.instr_pyperformance):
        with open(args.instr_pyperformance) as f:
            instr_pp = json.load(f)
    instr_pp_ft = None
    if args.instr_pyperformance_ft and os.path.exists(args.instr_pyperformance_ft):
        with open(args.instr_pyperformance_ft) as f:
            instr_pp_ft = json.load(f)

    out = ["# Benchmark results", ""]
    out.append("Generated by `scripts/bench` (benches/report.py); the analysis "
               "section is benches/analysis.md.  Do not edit by hand.")
    out.append("")
    if args.mode == "quick":
        out.append("**Quick mode (`scripts/bench --quick`): one value per benchmark, "
                   "no warm-up. These numbers only show that the suite runs; they "
                   "measure nothing.**")
        out.append("")
    out.append(f"Run {args.started}, pyperf mode: {args.mode}.")
    out.append("")
    out.append("## Machine and versions")
    out.append("")
    out.extend(machine_lines(args))
    out.extend(version_lines(args))
    out.append("- The machine is a 2-core VM, at times shared with other "
               "engineers' compilations and test runs (the load averages above say "
               "how busy it was), with no hardware performance counters, and "
               "`pyperf system tune` (CPU isolation, fixed frequency) was not "
               "available: timings carry that noise.  Ratios "
               "are taken within one run, where load hits every implementation "
               "alike, and the instruction counts below do not depend on load.")
    out.append("")
    out.extend(suite_section(args, benches, notes, build_notes, instr, ft))
    if args.criterion and os.path.isdir(args.criterion):
        out.extend(criterion_section(args.criterion))
    if args.memory and os.path.exists(args.memory):
        out.extend(memory_section(args.memory))
    if args.pyperformance:
        out.extend(pyperformance_section(args, instr_pp, instr_pp_ft))
    else:
        out.append("## No slowdown for ordinary code")
        out.append("")
        out.append("Not run in this mode (`scripts/bench` without `--quick`/`--no-pristine` runs it).")
        out.append("")
    analysis = os.path.join(HERE, "analysis.md")
    if os.path.exists(analysis):
        with open(analysis) as f:
            out.append(f.read().strip())
        out.append("")
    # Written by scripts/bench-pyo3 (benches/pyo3_report.py), kept as is.
    pyo3_native = os.path.join(HERE, "pyo3-native.md")
    if os.path.exists(pyo3_native):
        with open(pyo3_native) as f:
            out.append(f.read().strip())
        out.append("")
    out.append("## How to reproduce")
    out.append("")
    out.append("```sh")
    out.append("scripts/setup                       # patched CPython, venv, harness")
    out.append("scripts/bench                       # everything here (builds build/cpython-pristine if missing)")
    out.append("scripts/bench --quick               # smoke test (CI): one value per benchmark")
    out.append("scripts/bench --rigorous            # longer pyperf runs")
    out.append("scripts/bench --free-threaded       # the 3.13t instruction counts (then a full run reports them)")
    out.append("cargo bench -p pycoro --bench harness   # Rust microbenchmarks of the harness")
    out.append("build/venv-bench/bin/python benches/coro_bench.py --cases create_send --impls async_def,native")
    out.append("build/venv-bench/bin/python -m pyperf compare_to build/bench/pyperformance-pristine-a.json \\")
    out.append("    build/bench/pyperformance-patched.json")
    out.append("```")
    out.append("")
    out.append("Raw results (pyperf JSON, callgrind outputs) are in build/bench/.")
    out.append("")
    with open(args.output, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
