"""Write the section "PyO3's async fn: native frames against PyO3's
Coroutine" from a run of scripts/bench-pyo3 (see its --help).

    python benches/pyo3_report.py --json build/bench/pyo3-native.json -o benches/pyo3-native.md \\
        [--splice benches/RESULTS.md]

--splice also replaces that section in RESULTS.md (or inserts it before
"## How to reproduce"); benches/report.py includes benches/pyo3-native.md
when it remakes RESULTS.md.

What follows the line KEEP in the existing output file (the analysis,
written by hand) is kept after the generated tables, and spliced with them.
"""

import argparse
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import coro_bench as cb  # noqa: E402
from report import fmt_time, instr_cells, load_suite  # noqa: E402

TITLE = "## PyO3's async fn: native frames against PyO3's Coroutine"
IMPLS = [("async_def", "async def"),
         ("capi", "C floor (`cfloor.c`)"),
         ("pyo3", "PyO3 `Coroutine` (stock 0.30.1)"),
         ("pyo3_native", "PyO3 native (`native-coroutines`)")]
# The ratios in the last columns: (numerator, denominator, heading).
RATIOS = [("pyo3_native", "capi", "native / C floor"),
          ("pyo3_native", "pyo3", "native / Coroutine")]
KEEP = "<!-- Written by hand below: benches/pyo3_report.py keeps it. -->"


def ratio_cells(values):
    """The RATIOS cells of one row ({impl: value})."""
    return [f"{values[a] / values[b]:.2f}x" if values.get(a) and values.get(b) else ""
            for a, b, _ in RATIOS]


def header():
    heads = [t for _, t in IMPLS] + [t for _, _, t in RATIOS]
    return ["| case | " + " | ".join(heads) + " |", "| --- " * (len(heads) + 1) + "|"]


def section(args):
    benches = load_suite(args.json)
    notes = {}
    if args.notes and os.path.exists(args.notes):
        with open(args.notes) as f:
            notes = json.load(f)
    cases = []
    for name in benches:
        case = name.split("/")[0]
        if case not in cases:
            cases.append(case)
    out = [TITLE, ""]
    if args.mode == "quick":
        out += ["**Quick mode: one value per benchmark; these numbers measure nothing.**", ""]
    out.append(
        f"One pyperf run ({args.mode}) of `benches/coro_bench.py --impls async_def,capi,pyo3,pyo3_native` "
        f"on the patched interpreter, started {args.started}, pycoro git {args.commit}; load "
        f"average (1, 5, 15 min) {args.load_start} at the start, {args.load_end} at the end.  "
        "`pyo3` is benches/pyo3_baseline (stock PyO3 0.30.1, `experimental-async`: PyO3's own "
        "`Coroutine`); `pyo3_native` is examples/pyo3-async built by `scripts/build-example` "
        "(the patched PyO3, `native-coroutines`: a `types.CoroutineType`); the same Rust "
        "functions (`ready`, `yield_now`; `await_py` as `await_`); `capi` is the C floor, "
        "benches/cfloor/cfloor.c: the same functions written in C on the same API "
        "(the target of issue 16: PyO3's native path at most 1.1x of it).  Mean time per unit ± "
        "standard deviation, and the ratio to async def of the same run (lower is better).")
    try:
        busy = float(args.load_start.split()[0]) > (os.cpu_count() or 1)
    except (ValueError, IndexError):
        busy = False
    if busy:
        out.append("")
        out.append(f"The load was above the machine's {os.cpu_count()} CPUs: other processes "
                   "took most of the time and the timings below carry that noise (see the "
                   "standard deviations); the instruction counts after them are the measure.")
    out.append("")
    out.extend(header())
    footnotes = []
    for case in cases:
        inner_what = cb.CASES[case][3]
        row = [f"`{case}`: {inner_what}"]
        means = {}
        for impl, _ in IMPLS:
            b = benches.get(f"{case}/{impl}")
            if b is None:
                note = notes.get(f"{case}/{impl}", "not run")
                key = f"{impl}-{case}"
                footnotes.append(f"[^{key}]: {note}")
                row.append(f"n/a [^{key}]")
                continue
            values = b.get_values()
            mean = statistics.mean(values)
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            means[impl] = mean
            cell = f"{fmt_time(mean)} ± {fmt_time(sd)}"
            if impl != "async_def" and "async_def" in means:
                cell += f" (**{mean / means['async_def']:.2f}x**)"
            row.append(cell)
        row.extend(ratio_cells(means))
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    out.extend(footnotes)
    if footnotes:
        out.append("")
    if args.instr and os.path.exists(args.instr):
        with open(args.instr) as f:
            instr = json.load(f)
        out.append("Instructions per unit under callgrind (`benches/instr_count.py suite`; "
                   "machine load does not change them), and the ratio to async def:")
        out.append("")
        out.extend(header())
        for case, by_impl in instr.items():
            row = [f"`{case}`", *instr_cells(by_impl, [impl for impl, _ in IMPLS])]
            row.extend(ratio_cells(by_impl))
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    out.append("Reproduce: `scripts/bench-pyo3 --fast` (this section); `scripts/bench-pyo3 --quick` "
               "is the smoke test.")
    out.append("")
    return "\n".join(out)


def splice(path, text):
    with open(path) as f:
        lines = f.read().split("\n")
    start = next((i for i, ln in enumerate(lines) if ln == TITLE), None)
    if start is not None:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        lines[start:end] = text.rstrip("\n").split("\n") + [""]
    else:
        at = next((i for i, ln in enumerate(lines) if ln == "## How to reproduce"), len(lines))
        lines[at:at] = text.rstrip("\n").split("\n") + [""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--json", required=True)
    p.add_argument("--notes")
    p.add_argument("--instr", help="benches/instr_count.py suite output (JSON)")
    p.add_argument("--mode", default="normal")
    p.add_argument("--started", default="?")
    p.add_argument("--load-start", default="?")
    p.add_argument("--load-end", default="?")
    p.add_argument("--commit", default="?")
    p.add_argument("--splice", action="append", default=[])
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args()
    text = section(args)
    if os.path.exists(args.output):
        with open(args.output) as f:
            old = f.read()
        if KEEP in old:
            text = text.rstrip("\n") + "\n\n" + KEEP + old.split(KEEP, 1)[1]
    with open(args.output, "w") as f:
        f.write(text)
    for path in args.splice:
        splice(path, text)


if __name__ == "__main__":
    main()
