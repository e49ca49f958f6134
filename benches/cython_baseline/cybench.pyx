# cython: language_level=3
"""The Cython baseline of the benchmarks (benches/coro_bench.py): the same
functions as pycoro_harness's, as Cython compiles them (Cython's own
coroutine and generator types, not types.CoroutineType).  scripts/bench
builds it with `cythonize -i` against the patched interpreter.
"""
import asyncio


async def ready(value):
    return value


async def await_(aw):
    return await aw


async def yield_now(n):
    for _ in range(n):
        await asyncio.sleep(0)
    return n


def count(Py_ssize_t n):
    cdef Py_ssize_t i
    for i in range(n):
        yield i
