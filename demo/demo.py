"""A native coroutine, made in Rust, seen from Python.

Run by scripts/setup with build/venv/bin/python once the patched CPython
and the pycoro_harness extension are built.
"""

import asyncio
import traceback
import types

import pycoro_harness

coro = pycoro_harness.ready(1)
print("type(pycoro_harness.ready(1)):", type(coro))
print("is types.CoroutineType:", type(coro) is types.CoroutineType)
coro.close()

print("sleep:", asyncio.run(pycoro_harness.sleep(0.05, "woken by a Rust thread")))

print("a traceback through a native coroutine:")
try:
    asyncio.run(pycoro_harness.fail(ValueError("boom")))
except ValueError:
    traceback.print_exc()

