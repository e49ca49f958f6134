"""Measure the harness's two ways of suspending (see src/runtime.rs).

    python benches/wake.py

- bare yield: `yield_now(N)` (woken during the poll -> YIELD None), against
  the same loop of `await asyncio.sleep(0)` in Python;
- wake from another thread: `ping(N)` (Pending, a Rust thread wakes it ->
  AWAIT an asyncio future completed by call_soon_threadsafe, or a bare
  yield if the thread was faster than the suspension), against a Python
  coroutine that awaits a future a Python thread completes the same way;
- a bare send(None) loop over yield_now(N), against async def.
"""

import asyncio
import queue
import threading
import time

import pycoro_harness as h

N = 20_000


async def py_yield_now(n):
    for _ in range(n):
        await asyncio.sleep(0)
    return n


def start_py_pinger():
    q = queue.SimpleQueue()

    def run():
        while True:
            loop, fut = q.get()
            loop.call_soon_threadsafe(lambda f=fut: f.done() or f.set_result(None))
    threading.Thread(target=run, daemon=True).start()
    return q


PY_PINGER = start_py_pinger()


async def py_ping(n):
    loop = asyncio.get_running_loop()
    for _ in range(n):
        fut = loop.create_future()
        PY_PINGER.put((loop, fut))
        await fut
    return n


def per_step(make, runs=5):
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        asyncio.run(make())
        best = min(best, time.perf_counter() - t0)
    return best / N * 1e9


def send_loop_per_step(make, runs=5):
    best = float("inf")
    for _ in range(runs):
        c = make()
        t0 = time.perf_counter()
        try:
            while True:
                c.send(None)
        except StopIteration:
            pass
        best = min(best, time.perf_counter() - t0)
    return best / N * 1e9


if __name__ == "__main__":
    rows = [
        ("asyncio, bare yield: native yield_now", per_step(lambda: h.yield_now(N))),
        ("asyncio, bare yield: async def + sleep(0)", per_step(lambda: py_yield_now(N))),
        ("asyncio, woken by a thread: native ping", per_step(lambda: h.ping(N))),
        ("asyncio, woken by a thread: async def + future", per_step(lambda: py_ping(N))),
        ("send loop, bare yield: native yield_now", send_loop_per_step(lambda: h.yield_now(N))),
        ("send loop, bare yield: async def + sleep(0)",
         send_loop_per_step(lambda: py_yield_now(N))),
    ]
    for name, ns in rows:
        print(f"{name:50s} {ns:8.0f} ns/step")
