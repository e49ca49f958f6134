"""py-spy, an out-of-process profiler, sees the native frame.

py-spy reads the interpreter's memory through ``_Py_DebugOffsets``: the
frame chain, each frame's code object (name, file) and ``instr_ptr``, from
which it computes the line with the code's line table.  A child process
blocks inside a native coroutine's step (its Rust code calls a Python
callback that waits on stdin), and ``py-spy dump`` must show the native
frame with its Rust file, name and line, between the callback and the
asyncio frames, as it shows the frame of the ``async def`` twin.

py-spy is pinned in requirements-test.txt (installed into build/venv by
scripts/build-cpython); if the venv lacks it, the test installs the pinned
version with pip.  It skips only if the kernel refuses ptrace.
"""

import os
import re
import subprocess
import sys
import sysconfig
import textwrap

import pytest

from frames_common import frames_rs, marked

# py-spy 0.4.3 does not read free-threaded interpreters: on 3.13t it stops
# with "Failed to find python version from target process" before it looks
# at any frame (benfred/py-spy#711, "Support free-threaded python 3.13+",
# open).  The native frame is the same frame on 3.13t; only the tool is
# missing.
pytestmark = pytest.mark.skipif(
    bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
    reason="py-spy 0.4.3 cannot read a free-threaded (3.13t) process "
           "(benfred/py-spy#711)")

REQUIREMENTS = os.path.join(os.path.dirname(__file__), os.pardir,
                            "requirements-test.txt")
PY_SPY = os.path.join(os.path.dirname(sys.executable), "py-spy")


def pinned_py_spy():
    with open(REQUIREMENTS) as f:
        for line in f:
            if re.match(r"py-spy==", line.strip()):
                return line.strip()
    raise AssertionError("py-spy is not pinned in requirements-test.txt")


@pytest.fixture(scope="module")
def py_spy():
    if not os.access(PY_SPY, os.X_OK):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", pinned_py_spy()],
                       check=True)
    assert os.access(PY_SPY, os.X_OK), PY_SPY
    return PY_SPY


CHILD = textwrap.dedent("""
    import asyncio, sys
    import pycoro_harness as h
    sys.path.insert(0, {tests!r})
    import frames_common

    def blocked():
        print("ready", flush=True)
        sys.stdin.readline()       # until the parent has dumped the stack
        return "done"

    target = h.call if sys.argv[1] == "native" else frames_common.call
    print(asyncio.run(target(blocked)), flush=True)
""")


def dump(py_spy, kind, source=None):
    """py-spy's dump of the child ``source`` (default: CHILD) run with
    ``kind``; the child prints "ready", waits for a line, prints "done"."""
    if source is None:
        source = CHILD.format(tests=os.path.dirname(__file__))
    child = subprocess.Popen(
        [sys.executable, "-c", source, kind],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        spy = subprocess.run(
            [py_spy, "dump", "--full-filenames", "--pid", str(child.pid)],
            capture_output=True, text=True, timeout=120)
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline() == "done\n"
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
        child.stdout.close()
    if spy.returncode != 0:
        refused = ("Operation not permitted", "Permission denied", "ptrace")
        if any(s in spy.stderr for s in refused):
            pytest.skip("ptrace refused, py-spy cannot read the process: "
                        + spy.stderr.strip().splitlines()[-1])
        raise AssertionError("py-spy failed:\n" + spy.stdout + spy.stderr)
    return spy.stdout


def frame_lines(text):
    """The frames of the main thread, innermost first: (name, file, line)."""
    frames = []
    for line in text.splitlines():
        m = re.match(r"\s+(\S+) \((.+):(\d+)\)$", line)
        if m:
            frames.append((m.group(1), m.group(2), int(m.group(3))))
        elif frames and line.startswith("Thread "):
            break
    return frames


def test_py_spy_dump_shows_the_native_frame(py_spy):
    native = frame_lines(dump(py_spy, "native"))
    python = frame_lines(dump(py_spy, "python"))
    assert native[0][0] == python[0][0] == "blocked"
    # The native frame, with its Rust file and the line of the call.
    assert native[1] == ("call", frames_rs(), marked("call"))
    assert python[1][0] == "call"
    # The same asyncio frames below it.
    assert [f[0] for f in native[2:]] == [f[0] for f in python[2:]]
