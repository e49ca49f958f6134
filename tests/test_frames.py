"""The native frame as Python sees it: code object span, tracebacks,
``cr_frame``, and the live stack while a native step runs.

Every check compares a native coroutine of ``pycoro_harness`` with its
``async def`` twin (``frames_common``): same traceback shape and stack shape,
with the native frame's Rust file, line and name where the Python frame's
are.  Expected Rust lines come from ``// @line`` markers in
``rust-harness/pycoro_harness/src/frames.rs``.
"""

import asyncio
import faulthandler
import inspect
import io
import os
import re
import sys
import tempfile
import traceback
import warnings

import pytest

import pycoro_harness as h
from frames_common import (CO_NATIVE, TWINS, Suspend, frames_rs, marked,
                           native_code, source_line, source_lines)


# --- the code object ------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TWINS))
def test_code_spans_the_rust_function(name):
    code = native_code(name)
    assert code.co_flags & CO_NATIVE
    assert os.path.isabs(code.co_filename) and os.path.isfile(code.co_filename)
    lines = source_lines(code.co_filename)
    first = code.co_firstlineno
    # co_firstlineno is the line of `fn`, as a Python function's is `def`.
    assert re.search(r"\bfn\s+%s\s*[(<]" % re.escape(name), lines[first - 1])
    # The span ends at the function's closing brace (same indentation).
    last = max(line for _, _, line in code.co_lines() if line is not None)
    indent = len(lines[first - 1]) - len(lines[first - 1].lstrip())
    assert lines[last - 1] == " " * indent + "}"
    # ... and no brace at that indentation closes it earlier.
    assert " " * indent + "}" not in lines[first:last - 1]
    # Every line of the function has its own line group.
    assert {line for _, _, line in code.co_lines()} >= set(range(first, last + 1))


def test_probe_without_markers_spans_its_function_too():
    # Definitions in lib.rs get their span from the same build script.
    c = h.ready(1)
    c.close()
    lines = source_lines(c.cr_code.co_filename)
    assert re.search(r"\bfn\s+ready\s*\(", lines[c.cr_code.co_firstlineno - 1])


# --- tracebacks -------------------------------------------------------------

def outcome_tb(make):
    try:
        asyncio.run(make())
    except BaseException as e:
        return e, traceback.extract_tb(e.__traceback__)
    raise AssertionError("no exception")


def assert_same_shape(native_tb, python_tb, native_name, python_name):
    """Same number of entries; the native frame's entry where the Python
    frame's is, with the Rust file; all other entries identical."""
    assert len(native_tb) == len(python_tb)
    positions = []
    for i, (n, p) in enumerate(zip(native_tb, python_tb)):
        if p.name == python_name and p.filename == __import__("frames_common").__file__:
            assert n.name == native_name
            assert n.filename == frames_rs()
            positions.append(i)
        else:
            assert (n.filename, n.lineno, n.name) == (p.filename, p.lineno, p.name)
    assert positions, "the twin's frame is not in its traceback"
    return positions


def test_raise_points_at_the_raise_line():
    ne, ntb = outcome_tb(lambda: h.raise_value_error("boom"))
    pe, ptb = outcome_tb(lambda: TWINS["raise_value_error"][1]("boom"))
    assert (type(ne), str(ne)) == (type(pe), str(pe))
    [i] = assert_same_shape(ntb, ptb, "raise_value_error", "raise_value_error")
    assert i == len(ntb) - 1
    assert ntb[i].lineno == marked("raise_value_error")
    assert "lines::raise(" in ntb[i].line


def test_error_from_python_callee_points_at_the_call():
    def cb():
        raise KeyError("cb")
    ne, ntb = outcome_tb(lambda: h.call(cb))
    pe, ptb = outcome_tb(lambda: TWINS["call"][1](cb))
    assert (type(ne), str(ne)) == (type(pe), str(pe))
    [i] = assert_same_shape(ntb, ptb, "call", "call")
    assert ntb[i].lineno == marked("call")
    assert ntb[-1].name == ptb[-1].name == "cb"


def test_error_from_awaitable_points_at_the_await():
    def make(f):
        return lambda: f(Suspend(exc=LookupError("aw")), print)
    ne, ntb = outcome_tb(make(h.await_then_call))
    pe, ptb = outcome_tb(make(TWINS["await_then_call"][1]))
    assert (type(ne), str(ne)) == (type(pe), str(pe))
    [i] = assert_same_shape(ntb, ptb, "await_then_call", "await_then_call")
    assert ntb[i].lineno == marked("await_then_call.await")


def test_print_exc_shows_the_rust_source_line():
    try:
        asyncio.run(h.raise_value_error("shown"))
    except ValueError:
        out = io.StringIO()
        traceback.print_exc(file=out)
    text = out.getvalue()
    lineno = marked("raise_value_error")
    expected = '  File "%s", line %d, in raise_value_error\n    %s\n' % (
        frames_rs(), lineno, source_line(lineno).strip())
    assert expected in text


# --- cr_frame -----------------------------------------------------------------

def both(name, *args):
    native, python = TWINS[name]
    return native(*args), python(*args)


def test_frame_of_a_created_coroutine():
    for c in both("two_yields"):
        f = c.cr_frame
        assert f.f_code is c.cr_code
        assert f.f_lineno == c.cr_code.co_firstlineno
        assert f.f_back is None
        c.close()


def test_suspended_frame_follows_the_await_line():
    n, p = both("two_yields")
    nlines, plines = [], []
    for c, seen in ((n, nlines), (p, plines)):
        while True:
            try:
                c.send(None)
            except StopIteration:
                break
            f = c.cr_frame
            assert f.f_code is c.cr_code
            assert f.f_back is None
            seen.append(f.f_lineno)
        assert c.cr_frame is None
    assert len(nlines) == len(plines) == 2
    assert nlines == [marked("two_yields.1"), marked("two_yields.2")]
    # The twin moves to its own next await the same way.
    assert plines[0] < plines[1]


def lasti_line(frame):
    for start, end, line in frame.f_code.co_lines():
        if start <= frame.f_lasti < end:
            return line
    raise AssertionError("f_lasti %d outside co_lines" % frame.f_lasti)


def test_f_lasti_agrees_with_co_lines():
    for c in both("two_yields"):
        assert lasti_line(c.cr_frame) == c.cr_frame.f_lineno
        c.send(None)
        assert lasti_line(c.cr_frame) == c.cr_frame.f_lineno
        c.send(None)
        assert lasti_line(c.cr_frame) == c.cr_frame.f_lineno
        c.close()


def test_f_locals_is_an_empty_mapping():
    # Documented: a native frame has no fast locals; its f_locals is an
    # empty mapping (the Rust future's variables are not visible).
    c = h.two_yields()
    c.send(None)
    assert dict(c.cr_frame.f_locals) == {}
    c.close()


def test_f_lineno_cannot_be_set():
    c = h.two_yields()
    c.send(None)
    with pytest.raises(ValueError):
        c.cr_frame.f_lineno = marked("two_yields.2")
    c.close()


def clear_outcome(c, advance):
    for _ in range(advance):
        c.send(None)
    frame = c.cr_frame
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            frame.clear()
            result = ("ok",)
        except BaseException as e:
            result = ("raise", type(e), str(e))
        state = inspect.getcoroutinestate(c)
        c.close()
    messages = [str(w.message).replace(c.__qualname__, "<name>") for w in caught]
    return result, state, c.cr_frame is None, messages


@pytest.mark.parametrize("advance", [0, 1])
def test_frame_clear_as_for_async_def(advance):
    n, p = both("two_yields")
    assert clear_outcome(n, advance) == clear_outcome(p, advance)


def test_frame_clear_of_a_finished_coroutine():
    for c in both("two_yields"):
        frame = c.cr_frame
        asyncio.run(c)
        frame.clear()
        assert c.cr_frame is None


# --- the live stack while a step runs -------------------------------------------

def stack_views():
    """What Python code sees of its callers."""
    f = sys._getframe(1)
    walk = [(fr.f_code.co_name, fr.f_code.co_filename, lineno)
            for fr, lineno in traceback.walk_stack(f)]
    stack = [(fi.function, fi.filename, fi.lineno, fi.code_context)
             for fi in inspect.stack()[1:]]
    with tempfile.TemporaryFile("w+") as tmp:
        faulthandler.dump_traceback(tmp, all_threads=False)
        tmp.seek(0)
        dump = tmp.read()
    back = f.f_back
    return {"back": (back.f_code, back.f_lineno), "walk": walk,
            "stack": stack, "dump": dump}


def views_of(make):
    seen = []

    def cb(*args):
        seen.append(stack_views())
    asyncio.run(make(cb))
    [v] = seen
    return v


def test_callee_sees_the_module_of_the_native_frame():
    # sys._getframemodulename() reads the frame's function: for a native
    # frame the native function, whose __module__ is its globals' __name__
    # (the extension module's), as the twin's is its own module.
    def module_of(make):
        seen = []

        def cb():
            seen.append((sys._getframemodulename(1),
                         sys._getframe(1).f_globals["__name__"]))
        asyncio.run(make(cb))
        return seen
    assert module_of(h.call) == [("pycoro_harness", "pycoro_harness")]
    assert module_of(TWINS["call"][1]) == [("frames_common", "frames_common")]


def test_callee_sees_the_native_frame():
    n = views_of(lambda cb: h.call(cb))
    p = views_of(lambda cb: TWINS["call"][1](cb))
    code, lineno = n["back"]
    assert code is native_code("call")
    assert lineno == marked("call")
    assert p["back"][0] is TWINS["call"][1].__code__

    # traceback.walk_stack: same depth, the native frame where the twin is.
    assert len(n["walk"]) == len(p["walk"])
    assert n["walk"][1] == ("call", frames_rs(), marked("call"))
    assert p["walk"][1][0] == "call"
    # Below: the same frames (the test's own line differs, of course).
    assert [w[:2] for w in n["walk"][2:]] == [w[:2] for w in p["walk"][2:]]

    # inspect.stack: with the Rust source line as code context.
    assert len(n["stack"]) == len(p["stack"])
    fn, filename, lineno, context = n["stack"][1]
    assert (fn, filename, lineno) == ("call", frames_rs(), marked("call"))
    assert "lines::here()" in context[0]

    # faulthandler reads the frame chain directly.
    line = 'File "%s", line %d in call' % (frames_rs(), marked("call"))
    assert line in n["dump"]
    assert n["dump"].count("\n") == p["dump"].count("\n")


def test_callee_after_an_await_sees_the_new_line():
    n = views_of(lambda cb: h.await_then_call(Suspend(result=1), cb))
    p = views_of(lambda cb: TWINS["await_then_call"][1](Suspend(result=1), cb))
    assert n["back"] == (native_code("await_then_call"), marked("await_then_call.call"))
    assert len(n["walk"]) == len(p["walk"])


# --- asyncio tasks --------------------------------------------------------------

async def inner_wait(fut):
    return await fut


def task_stack(make):
    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        task = asyncio.create_task(make(inner_wait(fut), repr))
        await asyncio.sleep(0)
        frames = [(f.f_code.co_name, f.f_code.co_filename, f.f_lineno)
                  for f in task.get_stack()]
        out = io.StringIO()
        task.print_stack(file=out)
        fut.set_result(None)
        await task
        return frames, out.getvalue()
    return asyncio.run(main())


def test_task_get_stack_and_print_stack():
    nframes, ntext = task_stack(h.await_then_call)
    pframes, ptext = task_stack(TWINS["await_then_call"][1])
    # asyncio shows the task's coroutine frame (f_back is None while it
    # is suspended, so nothing below it).
    assert len(nframes) == len(pframes) == 1
    assert nframes[0] == ("await_then_call", frames_rs(), marked("await_then_call.await"))
    assert pframes[0][0] == "await_then_call"
    lineno = marked("await_then_call.await")
    assert '  File "%s", line %d, in await_then_call\n    %s\n' % (
        frames_rs(), lineno, source_line(lineno).strip()) in ntext
    assert ntext.count("\n") == ptext.count("\n")
