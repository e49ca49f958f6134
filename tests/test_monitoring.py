"""sys.monitoring, sys.setprofile, cProfile and sys.settrace see a native
frame where they see the frame of its ``async def`` twin.

Each program is run twice, with the native probe and with its twin
(``frames_common``), driven by a bare ``send`` loop; the recorded event
sequences must be equal once the target's code is named ``T`` in both.
Only events of the target and of the Python code it runs (awaitables,
callbacks) are kept, so the interpreter's own frames do not matter.
Native frames have no ``line`` events (no bytecode runs), and C calls made
by native code are not ``c_call`` events (as for any C function): those
are left out of the comparison.
"""

import cProfile
import io
import pstats
import sys

import pytest

from frames_common import (TWINS, Suspend, frames_rs, marked, native_code)

E = sys.monitoring.events
TOOL = 4  # free: 0 debugger, 1 coverage, 2 profiler, 5 optimizer
WATCHED = {
    "PY_START": E.PY_START, "PY_RESUME": E.PY_RESUME,
    "PY_YIELD": E.PY_YIELD, "PY_RETURN": E.PY_RETURN,
    "PY_THROW": E.PY_THROW, "PY_UNWIND": E.PY_UNWIND,
    "RAISE": E.RAISE, "RERAISE": E.RERAISE,
    "EXCEPTION_HANDLED": E.EXCEPTION_HANDLED,
    "STOP_ITERATION": E.STOP_ITERATION,
}
ALL = 0
for _event in WATCHED.values():
    ALL |= _event
# The events that can be set per code object (the others are global only).
LOCAL = E.PY_START | E.PY_RESUME | E.PY_RETURN | E.PY_YIELD | E.STOP_ITERATION


def cb_plus_one(v):
    return v + 1


def cb_fail(v):
    raise KeyError("cb")


# Programs: (probe name, args factory, driver).  The driver gets the
# coroutine and returns a summary of the outcome.

def send_all(coro):
    out = []
    try:
        while True:
            out.append(("yield", coro.send(None)))
    except StopIteration as e:
        out.append(("return", e.value))
    except BaseException as e:
        out.append(("raise", type(e).__name__, str(e)))
    return out


def throw_after_first(exc):
    def driver(coro):
        out = [("yield", coro.send(None))]
        try:
            coro.throw(exc)
        except BaseException as e:
            out.append(("raise", type(e).__name__))
        return out
    return driver


def close_after_first(coro):
    out = [("yield", coro.send(None))]
    coro.close()
    out.append(("closed", coro.cr_frame is None))
    return out


PROGRAMS = {
    "await-ok": ("await_then_call",
                 lambda: (Suspend("y", result=5), cb_plus_one), send_all),
    "await-raises": ("await_then_call",
                     lambda: (Suspend(exc=LookupError("aw")), cb_plus_one),
                     send_all),
    "callback-raises": ("await_then_call",
                        lambda: (Suspend(result=1), cb_fail), send_all),
    "throw": ("await_then_call", lambda: (Suspend(), cb_plus_one),
              throw_after_first(ValueError("thrown"))),
    "close": ("await_then_call", lambda: (Suspend(), cb_plus_one),
              close_after_first),
    "raise": ("raise_value_error", lambda: ("bad",), send_all),
    "two-yields": ("two_yields", lambda: (), send_all),
}


def label(code, target):
    if code is target:
        return "T"
    return code.co_qualname


def interesting(code, target):
    """The target and the Python code of this file and frames_common."""
    return code is target or code.co_filename in (__file__, Suspend.__await__.__code__.co_filename)


def run_program(program, native):
    name, args, driver = PROGRAMS[program]
    coro = TWINS[name][0 if native else 1](*args())
    return coro, driver


# --- sys.monitoring -------------------------------------------------------------

def monitor(program, native, local=False):
    coro, driver = run_program(program, native)
    target = coro.cr_code
    events = []
    lines = []

    def recorder(name):
        def cb(code, offset, *arg):
            if not interesting(code, target):
                return
            summary = ()
            if arg:
                a = arg[0]
                summary = (type(a).__name__,) if isinstance(a, BaseException) else (repr(a),)
            events.append((name, label(code, target)) + summary)
            if code is target:
                lines.append((name, line_of(code, offset)))
        return cb

    sys.monitoring.use_tool_id(TOOL, "test_monitoring")
    try:
        for name, event in WATCHED.items():
            sys.monitoring.register_callback(TOOL, event, recorder(name))
        if local:
            sys.monitoring.set_local_events(TOOL, target, LOCAL)
        else:
            sys.monitoring.set_events(TOOL, ALL)
        outcome = driver(coro)
    finally:
        sys.monitoring.set_events(TOOL, 0)
        if local:
            sys.monitoring.set_local_events(TOOL, target, 0)
        for event in WATCHED.values():
            sys.monitoring.register_callback(TOOL, event, None)
        sys.monitoring.free_tool_id(TOOL)
    return outcome, events, lines


def line_of(code, offset):
    for start, end, line in code.co_lines():
        if start <= offset < end:
            return line
    return None


def comparable(program, events):
    """`two-yields` suspends with bare yields, which have no delegate; its
    twin's `await asyncio.sleep(0)` delegates to a coroutine, whose return
    is a STOP_ITERATION event (an "exception" event for settrace) in the
    awaiting frame.  Leave those out for that program only."""
    if program != "two-yields":
        return events
    return [e for e in events
            if not (e[1] == "T" and (e[0] == "STOP_ITERATION" or
                                     e[0] == "exception" and e[2] == "StopIteration"))]


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_monitoring_events_as_for_async_def(program):
    n_out, n_events, _ = monitor(program, native=True)
    p_out, p_events, _ = monitor(program, native=False)
    assert n_out == p_out
    assert n_events == comparable(program, p_events)
    assert any(e[1] == "T" for e in n_events)


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_local_events_as_for_async_def(program):
    n_out, n_events, _ = monitor(program, native=True, local=True)
    p_out, p_events, _ = monitor(program, native=False, local=True)
    assert n_out == p_out
    assert n_events == comparable(program, p_events)
    # Only the target's code was instrumented.
    assert n_events and {e[1] for e in n_events} == {"T"}


def test_event_offsets_are_at_the_rust_lines():
    _, _, lines = monitor("await-ok", native=True)
    first = native_code("await_then_call").co_firstlineno
    await_line = marked("await_then_call.await")
    call_line = marked("await_then_call.call")
    assert lines == [("PY_START", first), ("PY_YIELD", await_line),
                     ("PY_RESUME", await_line), ("STOP_ITERATION", await_line),
                     ("PY_RETURN", call_line)]


# --- sys.setprofile / cProfile -------------------------------------------------

def legacy(program, native, install):
    coro, driver = run_program(program, native)
    target = coro.cr_code
    events = []

    def hook(frame, event, arg):
        if event.startswith("c_") or event in ("line", "opcode"):
            return hook
        if interesting(frame.f_code, target):
            summary = (type(arg[1]).__name__,) if event == "exception" else (repr(arg),)
            events.append((event, label(frame.f_code, target)) + summary)
        return hook

    install(hook)
    try:
        outcome = driver(coro)
    finally:
        install(None)
    return outcome, events


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_setprofile_as_for_async_def(program):
    n = legacy(program, True, sys.setprofile)
    p = legacy(program, False, sys.setprofile)
    assert n == p
    assert any(e[1] == "T" for e in n[1])


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_settrace_as_for_async_def(program):
    n = legacy(program, True, sys.settrace)
    p = legacy(program, False, sys.settrace)
    assert n[0] == p[0]
    assert n[1] == comparable(program, p[1])
    assert any(e[1] == "T" for e in n[1])


def profile(program, native):
    coro, driver = run_program(program, native)
    target = coro.cr_code
    prof = cProfile.Profile()
    prof.enable()
    try:
        driver(coro)
    finally:
        prof.disable()
    stats = pstats.Stats(prof)
    key = (target.co_filename, target.co_firstlineno, target.co_name)
    out = io.StringIO()
    stats.stream = out
    stats.print_stats()
    return stats.stats.get(key), out.getvalue()


@pytest.mark.parametrize("program", ["await-ok", "throw", "two-yields"])
def test_cprofile_shows_the_native_function(program):
    n_entry, n_text = profile(program, True)
    p_entry, _ = profile(program, False)
    assert n_entry is not None and p_entry is not None
    # Same primitive and total call counts.
    assert n_entry[:2] == p_entry[:2]
    name = PROGRAMS[program][0]
    code = native_code(name)
    assert "%s:%d(%s)" % (frames_rs(), code.co_firstlineno, name) in n_text
