"""Memory of one suspended native coroutine against the same async def.

    python benches/memory.py [--n N] [--out memory.json] [--markdown]

The probe's `pycoro_harness.sleep(seconds, result)` (a Rust future that
waits for a Rust thread's wake-up) against its async def twin, the same
function written in Python:

    async def sleep(seconds, result=None):
        await asyncio.sleep(seconds)
        return result

(the twin waits on asyncio's timer, the native one on a Rust thread; both
suspend their task on one asyncio future).  N coroutines of each are made
and run as asyncio tasks until every one is suspended in its sleep; the
numbers, per coroutine:

- `getsizeof`: `sys.getsizeof(coro)` while suspended.  It counts a
  native coroutine's native state since the series' gen_sizeof() fix
  (patch 0004, 2026-12-01; before, it read Py_SIZE(), which a generator
  does not keep); the next row is what tracemalloc sees allocated.
- `object`: what tracemalloc sees allocated by making the coroutines (not
  started), divided by N: the coroutine object as allocated, for a native
  one with its native state, where the Rust future lives inline (boxed
  only above 256 bytes; these are not).
- `python_heap`: what tracemalloc sees allocated (and still held) between
  before the coroutines were made and when all are suspended, divided by N:
  the coroutine, its Task, the future it waits on, and for the twin the
  inner `asyncio.sleep` coroutine and its timer handle.  Allocations by
  Rust code (the system allocator) are not in it.
- `c_heap`: the growth of the C heap (glibc `mallinfo2().uordblks`, every
  malloc arena) over the same span, divided by N: the Rust future's own
  allocations (its waker signal, the sleep's shared state, the waking
  thread's bookkeeping) and anything else that went to malloc (Python
  objects above 512 bytes too); measured in a second run without
  tracemalloc, which keeps its traces in the C heap; None where mallinfo2
  is missing.  The waking thread's stack (mmap, not malloc) is
  in neither number.
- `total`: `python_heap + c_heap`.
"""

import argparse
import asyncio
import ctypes
import gc
import json
import sys
import tracemalloc

SECONDS = 3600.0   # never wakes while measured: every task stays suspended


async def twin_sleep(seconds, result=None):
    await asyncio.sleep(seconds)
    return result


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
        "fsmblks", "uordblks", "fordblks", "keepcost")]


def _c_heap_reader():
    try:
        libc = ctypes.CDLL(None)
        f = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    f.restype = _Mallinfo2
    return lambda: f().uordblks


C_HEAP = _c_heap_reader()


async def measure(make, n, traced):
    """Per-coroutine figures of `n` suspended coroutines made by `make()`:
    with tracemalloc on (`traced`), the Python heap; off, the C heap
    (tracemalloc keeps its own traces in the C heap)."""
    read = (lambda: tracemalloc.get_traced_memory()[0]) if traced else C_HEAP
    if read is None:
        return {}
    gc.collect()
    before = read()
    coros = [make() for _ in range(n)]
    made = read()
    tasks = [asyncio.ensure_future(c) for c in coros]
    # Each task runs its first step and suspends in its sleep.
    for _ in range(3):
        await asyncio.sleep(0)
    assert all(not t.done() for t in tasks)
    gc.collect()
    suspended = read()
    size = sys.getsizeof(coros[0])
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if traced:
        return {"getsizeof": size,
                "object": round((made - before) / n),
                "python_heap": round((suspended - before) / n)}
    return {"c_heap": round((suspended - before) / n)}


def run(n):
    import pycoro_harness

    impls = {
        "async_def": lambda: twin_sleep(SECONDS, None),
        "native": lambda: pycoro_harness.sleep(SECONDS, None),
    }
    results = {}
    for name, make in impls.items():
        row = {}
        for traced in (True, False):
            if traced:
                tracemalloc.start()
            # One warm-up round: first-call caches (code objects, interned
            # names, the runtime's glue) are not per-coroutine costs.
            asyncio.run(measure(make, 4, traced))
            row.update(asyncio.run(measure(make, n, traced)))
            if traced:
                tracemalloc.stop()
        row.setdefault("c_heap", None)
        row["total"] = row["python_heap"] + (row["c_heap"] or 0)
        results[name] = row
    return {"n": n, "case": "sleep", "results": results}


def markdown(data):
    rows = data["results"]
    out = [
        "| bytes per suspended coroutine (`sleep`, N = {}) | async def | native |".format(data["n"]),
        "| --- | ---: | ---: |",
    ]
    labels = [
        ("getsizeof", "`sys.getsizeof(coro)`"),
        ("object", "the coroutine object as allocated (tracemalloc, before its first step)"),
        ("python_heap", "Python heap held (tracemalloc: coroutine, Task, awaited future, ...)"),
        ("c_heap", "C heap held (mallinfo2: the Rust future's own allocations, ...)"),
        ("total", "Python + C heap"),
    ]
    for key, label in labels:
        cells = ["n/a" if rows[i][key] is None else f"{rows[i][key]:,}"
                 for i in ("async_def", "native")]
        out.append(f"| {label} | {cells[0]} | {cells[1]} |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="coroutines per implementation")
    p.add_argument("--out", help="write the figures as JSON")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    opts = p.parse_args()
    data = run(opts.n)
    if opts.out:
        with open(opts.out, "w") as f:
            json.dump(data, f, indent=1)
    print(markdown(data) if opts.markdown else json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
