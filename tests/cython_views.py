"""Print what a traceback, sys.monitoring, Task.get_stack() and py-spy show of a
Cython coroutine in three builds of tests/cython/cyprobe.pyx: with native
frames (CPython's types, the patched Cython's default here), with
-DCYTHON_USE_NATIVE_FRAMES=0 (Cython's own coroutine type), and its async
def twin (the same file imported as Python).

    build/venv/bin/python tests/cython_views.py

It builds the modules as tests/test_cython.py does (its _build, into a
temporary directory) and runs that file's scenarios (tb_entries,
monitoring_events, task_stack, the py-spy child), unfiltered where they
filter; the comparisons native == twin are asserted there
(test_traceback_lines, test_monitoring_events, test_task_get_stack,
test_pyspy_sees_the_native_frame).  The output is recorded in
docs/pep-native-coroutines.rst ("Frames, monitoring, profilers").
"""

import asyncio
import os
import sys
import tempfile
import traceback
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import test_cython as tc  # noqa: E402


def traceback_view(mod):
    try:
        asyncio.run(mod.fail_deep())
    except ValueError as e:
        tb = traceback.extract_tb(e.__traceback__)
    # every entry outside asyncio's own files
    return [(os.path.basename(f.filename), f.name, f.lineno) for f in tb
            if os.sep + "asyncio" + os.sep not in f.filename and f.filename != __file__]


def monitoring_view(mod):
    """Every sys.monitoring event of cyprobe's code (test_cython's
    monitoring_events, unfiltered)."""
    return [f"{event} {name}" for event, name in tc.monitoring_events(mod, names=None)]


def task_stack_view(mod):
    async def main():
        event = asyncio.Event()
        task = asyncio.create_task(mod.wait_for(event))
        await asyncio.sleep(0)
        stack = [(os.path.basename(f.f_code.co_filename), f.f_code.co_name, f.f_lineno)
                 for f in task.get_stack()]
        event.set()
        await task
        return stack
    return asyncio.run(main())


def pyspy_view(mod, name, path):
    """py-spy dump of a process blocked in a callback that
    cyprobe.call_blocked calls (test_cython's PYSPY_CHILD): the frames in
    cyprobe's files."""
    import test_pyspy

    if not os.access(test_pyspy.PY_SPY, os.X_OK):
        return f"no py-spy at {test_pyspy.PY_SPY}"
    out = test_pyspy.dump(test_pyspy.PY_SPY, "-", tc.PYSPY_CHILD.replace(
        "sys.argv[2], sys.argv[3]", repr(path) + ", " + repr(name)))
    return [(fn, os.path.basename(file), line) for fn, file, line in test_pyspy.frame_lines(out)
            if os.path.basename(file).startswith("cyprobe")]


def main():
    with tempfile.TemporaryDirectory() as tmpdir:
        mods = {
            "native (CPython's types)": ("cyprobe", tc._build(tmpdir, "cyprobe", [])),
            "stock (-DCYTHON_USE_NATIVE_FRAMES=0)": ("cyprobe_stock", tc._build(
                tmpdir, "cyprobe_stock", ["-DCYTHON_USE_NATIVE_FRAMES=0"])),
            "async def twin": ("cyprobe_twin", tc._twin("cyprobe_twin", tc.PYX)),
        }
        for label, (name, mod) in mods.items():
            c = mod.wait_for(None)
            frame = getattr(c, "cr_frame", None)
            print(f"== {label}")
            print(f"type: {type(c).__module__}.{type(c).__qualname__}, "
                  f"CoroutineType: {type(c) is types.CoroutineType}, "
                  f"cr_frame: {type(frame).__name__}")
            c.close()
            print("traceback of asyncio.run(fail_deep()):", traceback_view(mod))
            print("sys.monitoring, chain(2) then fail('x'):", monitoring_view(mod))
            print("Task.get_stack() of a task waiting in wait_for():", task_stack_view(mod))
            path = tc.PYX if name == "cyprobe_twin" else mod.__file__
            print("py-spy dump inside call_blocked():", pyspy_view(mod, name, path))
            print()


if __name__ == "__main__":
    main()
