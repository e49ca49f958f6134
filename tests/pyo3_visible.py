"""What a PyO3 user sees of a ``#[pyfunction] async fn``'s coroutine.

Run as a script by tests/test_pyo3_async.py (``python pyo3_visible.py
MODE``), once on the native backend and once with PyO3's own ``Coroutine``
(``PYCORO_NATIVE_FRAMES=0``, or the unpatched interpreter); MODE ``twin``
observes the ``async def`` twins instead.  Prints one JSON object: each
observation, by name (docs/pyo3-native-coroutines.md lists them).
"""

import asyncio
import gc
import inspect
import json
import os
import subprocess
import sys
import tempfile
import types
import warnings


async def ready(value):
    return value


async def call(callable):
    return callable()


async def sleep(seconds, value):
    await asyncio.sleep(seconds)
    return value


def exc(e):
    return [type(e).__name__, str(e)]


def outcome(fn):
    try:
        return ["return", repr(fn())]
    except BaseException as e:  # noqa: BLE001 - observed, not handled
        return ["raise"] + exc(e)


def observe(ops, mode):
    out = {}
    c = ops.ready(1)
    out["type"] = f"{type(c).__module__}.{type(c).__qualname__}"
    out["is_coroutine_type"] = type(c) is types.CoroutineType
    out["inspect.iscoroutine"] = inspect.iscoroutine(c)
    out["asyncio.iscoroutine"] = asyncio.iscoroutine(c)
    out["repr"] = repr(c).split(" at 0x")[0]
    out["__name__"] = c.__name__
    out["__qualname__"] = c.__qualname__
    out["has __next__"] = hasattr(c, "__next__")
    out["coroutine attributes"] = [a for a in ("cr_frame", "cr_code", "cr_await", "cr_running",
                                                "cr_origin", "cr_suspended") if hasattr(c, a)]
    out["__await__() is self"] = c.__await__() is c
    out["type(__await__())"] = type(c.__await__()).__name__
    out["send(non-None) when fresh"] = outcome(lambda: c.send("x"))
    c.close()
    c = ops.ready(1)
    out["next(c)"] = outcome(lambda: next(c))
    c.close()
    out["iscoroutinefunction(fn)"] = inspect.iscoroutinefunction(ops.ready)

    # Re-entry: Python code called by the running coroutine sends to it.
    box = []
    box.append(ops.call(lambda: box[0].send(None)))
    out["re-entry"] = outcome(lambda: asyncio.run(box[0]))

    # Reuse after completion.
    c = ops.ready(1)
    asyncio.run(c)
    out["send after completion"] = outcome(lambda: c.send(None))

    # A coroutine that is never awaited.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ops.ready(1)
        gc.collect()
    out["never awaited"] = [f"{w.category.__name__}: {w.message}" for w in caught]

    # The same under -W error, in a child process.
    child = (f"import sys; sys.path.insert(0, {sys.path[0]!r}); import pyo3_visible as v; "
             f"v.ops({mode!r}).ready(1); print('end of program')")
    r = subprocess.run([sys.executable, "-W", "error", "-c", child],
                       capture_output=True, text=True)
    err = [line for line in r.stderr.splitlines() if line.strip()]
    out["-W error: exit code, stdout, last stderr line"] = [r.returncode, r.stdout.strip(),
                                                           err[-1] if err else ""]

    # The same in a test run by pytest -W error.
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "test_never_awaited.py"), "w") as f:
            f.write(f"import sys\nsys.path.insert(0, {sys.path[0]!r})\nimport pyo3_visible as v\n"
                    f"def test_it():\n    v.ops({mode!r}).ready(1)\n")
        # No third-party plugins (hypothesis, anyio, trio's): faster start.
        r = subprocess.run([sys.executable, "-m", "pytest", "-W", "error", "-q", "-p",
                            "no:cacheprovider", tmp], capture_output=True, text=True, cwd=tmp,
                           env=dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1"))
    summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr
    out["pytest -W error: exit code, summary"] = [r.returncode, summary.split(" in ")[0]]

    # throw() into a suspended coroutine, close() of a suspended one.
    async def throw_into():
        t = asyncio.ensure_future(ops.sleep(10, "slept"))
        await asyncio.sleep(0.01)
        t.cancel("stop")
        try:
            await t
        except asyncio.CancelledError as e:
            return ["CancelledError", e.args, t.cancelled()]
    out["task.cancel() while sleeping"] = asyncio.run(throw_into())

    # trio (the twin, which sleeps with asyncio.sleep, does not apply).
    if mode == "twin":
        out["under trio"] = "n/a"
        return out
    try:
        import trio
        c = ops.sleep(0.01, "slept")

        async def main():
            return await c
        out["under trio"] = outcome(lambda: trio.run(main))
        # Where trio failed, the sleep's thread still holds a waker: closing
        # the coroutine drops the Rust future, which ends that thread (it
        # would otherwise wake PyO3's waker after the interpreter ended).
        c.close()
    except ImportError:
        out["under trio"] = "trio not installed"
    return out


def ops(mode):
    if mode == "twin":
        return types.SimpleNamespace(ready=ready, call=call, sleep=sleep)
    import pyo3_async_example
    return pyo3_async_example


if __name__ == "__main__":
    mode = sys.argv[1]
    print(json.dumps(observe(ops(mode), mode), indent=1))
