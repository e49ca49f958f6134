"""Cython's coroutines, generators and async generators with native frames.

``tests/cython/cyprobe.pyx`` is compiled twice by the patched Cython of the
venv (``scripts/patch-cython``): as ``cyprobe`` with native frames (the
default on this interpreter) and as ``cyprobe_stock`` with
``-DCYTHON_USE_NATIVE_FRAMES=0`` (Cython's own types).  The same file is
valid Python and is imported a third time as plain Python: the ``async
def``/``def`` twin, with the same names and lines.  Each scenario runs the
Cython module and the twin the same way and compares what Python sees.
"""

import asyncio
import gc
import importlib.machinery
import importlib.util
import inspect
import os
import shutil
import subprocess
import sys
import sysconfig
import traceback
import types
import warnings
import weakref

import pytest

from monitoring_common import monitoring

HERE = os.path.dirname(os.path.abspath(__file__))
PYX = os.path.join(HERE, "cython", "cyprobe.pyx")
PEER_PYX = os.path.join(HERE, "cython", "cypeer.pyx")
CO_NATIVE = getattr(inspect, "CO_NATIVE", 0x10000000)

try:
    import Cython
except ImportError:  # pragma: no cover - the venv is made by the scripts
    Cython = None

pytestmark = pytest.mark.skipif(
    Cython is None, reason="Cython is not installed in this venv (scripts/patch-cython)")


def _build(tmpdir, name, defines, pyx=PYX):
    src = os.path.join(tmpdir, name + ".pyx")
    shutil.copy(pyx, src)
    c_file = os.path.join(tmpdir, name + ".c")
    subprocess.run([sys.executable, "-m", "cython", "-3", "--fast-fail", name + ".pyx",
                    "-o", c_file], cwd=tmpdir, check=True)
    ext = sysconfig.get_config_var("EXT_SUFFIX")
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    cmd = cc + ["-shared", "-fPIC", "-O1", "-g0", "-Werror=implicit-function-declaration",
                "-I", sysconfig.get_paths()["include"], *defines, c_file,
                "-o", os.path.join(tmpdir, name + ext)]
    subprocess.run(cmd, check=True)
    spec = importlib.util.spec_from_file_location(name, os.path.join(tmpdir, name + ext))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def modules(tmp_path_factory):
    tmpdir = str(tmp_path_factory.mktemp("cython"))
    native = _build(tmpdir, "cyprobe", [])
    stock = _build(tmpdir, "cyprobe_stock", ["-DCYTHON_USE_NATIVE_FRAMES=0"])
    peer = _build(tmpdir, "cypeer", [], PEER_PYX)
    peer_stock = _build(tmpdir, "cypeer_stock", ["-DCYTHON_USE_NATIVE_FRAMES=0"], PEER_PYX)
    return {"native": native, "stock": stock, "twin": _twin("cyprobe_twin", PYX),
            "peer": peer, "peer_stock": peer_stock, "peer_twin": _twin("cypeer_twin", PEER_PYX)}


def _twin(name, pyx):
    loader = importlib.machinery.SourceFileLoader(name, pyx)
    spec = importlib.util.spec_from_loader(name, loader)
    twin = importlib.util.module_from_spec(spec)
    loader.exec_module(twin)
    return twin


@pytest.fixture
def native(modules):
    return modules["native"]


@pytest.fixture
def twin(modules):
    return modules["twin"]


@pytest.fixture
def stock(modules):
    return modules["stock"]


def drive(coro):
    """Run a coroutine that only yields None (asyncio.sleep(0) outside a
    loop) to completion; return its result."""
    while True:
        try:
            coro.send(None)
        except StopIteration as e:
            return e.value


# --- type identity ------------------------------------------------------------

def test_types_are_cpythons(native, twin):
    for mod in (native, twin):
        c = mod.add(1)
        g = mod.count(2)
        ag = mod.acount(2)
        assert type(c) is types.CoroutineType
        assert type(g) is types.GeneratorType
        assert type(ag) is types.AsyncGeneratorType
        assert inspect.iscoroutine(c) and inspect.isgenerator(g) and inspect.isasyncgen(ag)
        assert isinstance(c.cr_frame, types.FrameType)
        assert isinstance(ag.ag_frame, types.FrameType)
        c.close()
    for mod, native_code in ((native, True), (twin, False)):
        c = mod.add(1)
        assert bool(c.cr_code.co_flags & CO_NATIVE) is native_code
        c.close()


def test_stock_build_keeps_cythons_types(stock, twin):
    c = stock.add(1)
    assert type(c) is not types.CoroutineType
    assert type(stock.count(1)) is not types.GeneratorType
    ag = stock.acount(1)
    assert type(ag) is not types.AsyncGeneratorType
    assert drive(ag.aclose()) is None
    assert drive(c) == drive(twin.add(1))


def test_code_objects(native, twin):
    for name in ("add", "count", "acount", "chain"):
        n = getattr(native, name)
        t = getattr(twin, name)
        obj_n = n(1) if name != "add" else n(1, 2)
        obj_t = t(1) if name != "add" else t(1, 2)
        code_n = getattr(obj_n, "cr_code", None) or getattr(obj_n, "gi_code", None) or obj_n.ag_code
        code_t = getattr(obj_t, "cr_code", None) or getattr(obj_t, "gi_code", None) or obj_t.ag_code
        nargs = (code_t.co_argcount + code_t.co_kwonlyargcount
                 + bool(code_t.co_flags & inspect.CO_VARARGS)
                 + bool(code_t.co_flags & inspect.CO_VARKEYWORDS))
        assert code_n.co_name == code_t.co_name
        assert code_n.co_qualname == code_t.co_qualname
        assert code_n.co_firstlineno == code_t.co_firstlineno
        assert os.path.basename(code_n.co_filename) == os.path.basename(code_t.co_filename)
        assert code_n.co_varnames[:nargs] == code_t.co_varnames[:nargs]
        assert (obj_n.__name__, obj_n.__qualname__) == (obj_t.__name__, obj_t.__qualname__)
        for o in (obj_n, obj_t):
            if hasattr(o, "close") and not inspect.isasyncgen(o):
                o.close()


# --- inspect states and lines -----------------------------------------------

def coro_states(mod):
    c = mod.add(1, 2)
    seen = [(inspect.getcoroutinestate(c), c.cr_frame.f_lineno)]
    c.send(None)
    seen.append((inspect.getcoroutinestate(c), c.cr_frame.f_lineno,
                 type(c.cr_await).__name__))
    with pytest.raises(StopIteration) as e:
        c.send(None)
    seen.append((inspect.getcoroutinestate(c), c.cr_frame, e.value.value))
    return seen


def gen_states(mod):
    g = mod.count(2)
    seen = [(inspect.getgeneratorstate(g), g.gi_frame.f_lineno)]
    seen.append((next(g), inspect.getgeneratorstate(g), g.gi_frame.f_lineno))
    seen.append(list(g))
    seen.append(inspect.getgeneratorstate(g))
    d = mod.delegate(2)
    seen.append(list(d))
    return seen


def agen_states(mod):
    ag = mod.acount(2)
    seen = [inspect.getasyncgenstate(ag)]
    step = ag.__anext__()
    step.send(None)  # suspended in checkpoint()
    seen.append((inspect.getasyncgenstate(ag), ag.ag_frame.f_lineno))
    with pytest.raises(StopIteration) as e:
        step.send(None)
    seen.append((e.value.value, inspect.getasyncgenstate(ag)))
    seen.append(drive(mod.aconsume(3)))
    return seen


@pytest.mark.parametrize("states", [coro_states, gen_states, agen_states])
def test_inspect_states_and_lines(native, twin, states):
    assert states(native) == states(twin)


# --- CPython's own machinery: warnings, throw, re-entry -----------------------

def test_never_awaited_warning(native, twin):
    def warned(mod):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            c = mod.add(1)
            del c
            gc.collect()
        return [(x.category, str(x.message)) for x in w]
    assert warned(native) == warned(twin) == [(RuntimeWarning, "coroutine 'add' was never awaited")]


def throw_and_close(mod):
    seen = []
    c = mod.catch(KeyError)
    c.send(None)  # suspended in checkpoint() inside the try
    try:
        c.throw(KeyError("thrown"))  # caught by the except, which awaits again
    except StopIteration as e:
        seen.append(("stopped", e.value))
    else:
        seen.append(("suspended", inspect.getcoroutinestate(c)))
        try:
            c.send(None)
        except StopIteration as e:
            seen.append(("result", e.value))
    g = mod.count(3)
    next(g)
    g.close()
    seen.append(inspect.getgeneratorstate(g))
    c = mod.add(1)
    c.close()
    with pytest.raises(RuntimeError) as e:
        c.send(None)
    seen.append(str(e.value))
    return seen


def test_throw_close_and_reuse(native, twin):
    assert throw_and_close(native) == throw_and_close(twin)


# --- tracebacks and Task.get_stack() ------------------------------------------

def tb_entries(mod):
    try:
        asyncio.run(mod.fail_deep())
    except ValueError as e:
        tb = traceback.extract_tb(e.__traceback__)
    return [(f.name, f.lineno) for f in tb
            if os.path.basename(f.filename).startswith("cyprobe")]


def test_traceback_lines(native, twin):
    entries = tb_entries(native)
    assert entries == tb_entries(twin)
    assert [name for name, _ in entries] == ["fail_deep", "fail"]


def task_stack(mod):
    async def main():
        event = asyncio.Event()
        task = asyncio.create_task(mod.wait_for(event))
        await asyncio.sleep(0)
        stack = [(f.f_code.co_name, f.f_lineno) for f in task.get_stack()]
        event.set()
        return stack, await task
    return asyncio.run(main())


def test_task_get_stack(native, twin):
    assert task_stack(native) == task_stack(twin)
    assert task_stack(native)[0][0][0] == "wait_for"


def test_exception_state_in_except(native, twin):
    assert drive(native.catch(KeyError)) == drive(twin.catch(KeyError)) == ("KeyError", "KeyError")


# --- sys.monitoring -----------------------------------------------------------

def monitoring_events(mod, names=("chain", "checkpoint", "fail")):
    """(event, code name) of cyprobe's code while chain(2) runs and fail('x')
    raises; only the code objects named in `names` (every one if None)."""
    E = sys.monitoring.events
    wanted = {E.PY_START: "PY_START", E.PY_RESUME: "PY_RESUME", E.PY_YIELD: "PY_YIELD",
              E.PY_RETURN: "PY_RETURN", E.PY_UNWIND: "PY_UNWIND", E.RAISE: "RAISE"}
    seen = []

    def record(name):
        def cb(code, *args):
            if (names is None or code.co_name in names) and \
                    os.path.basename(code.co_filename).startswith("cyprobe"):
                seen.append((name, code.co_name))
        return cb

    with monitoring("test_cython", {e: record(n) for e, n in wanted.items()}):
        drive(mod.chain(2))
        c = mod.fail("x")
        with pytest.raises(ValueError):
            drive(c)
    return seen


def test_monitoring_events(native, twin):
    events = monitoring_events(native)
    assert events == monitoring_events(twin)
    assert ("PY_START", "chain") in events and ("PY_UNWIND", "fail") in events


# --- GC -----------------------------------------------------------------------

def test_gc_collects_cycles_through_the_closure(native, twin):
    for mod in (native, twin):
        box = []
        g = mod.self_cycle(box)
        assert next(g) is box
        box[0] = g
        ref = weakref.ref(g)
        del g, box
        gc.collect()
        assert ref() is None

        box = []
        c = mod.coro_cycle(box)
        c.send(None)
        box[0] = c
        ref = weakref.ref(c)
        del c, box
        gc.collect()
        assert ref() is None


def test_inlined_genexpr_and_super(native, twin):
    assert native.genexpr_sum(5) == twin.genexpr_sum(5)
    assert list(native.Greeter().hello()) == list(twin.Greeter().hello())


# --- event loops --------------------------------------------------------------

def _run(runtime, fn, *args, **kwargs):
    async def main():
        return await fn(*args, **kwargs)
    if runtime == "asyncio":
        return asyncio.run(main())
    if runtime == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.run(main())
    if runtime == "trio":
        trio = pytest.importorskip("trio")
        return trio.run(fn, *args) if not kwargs else trio.run(main)
    anyio = pytest.importorskip("anyio")
    return anyio.run(main, backend=runtime.split("-", 1)[1])


RUNTIMES = ["asyncio", "uvloop", "trio", "anyio-asyncio", "anyio-trio"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_under_event_loops(native, twin, runtime):
    def scenario(mod):
        out = [_run(runtime, mod.add, 1, 2, scale=3),
               _run(runtime, mod.chain, 4),
               _run(runtime, mod.aconsume, 3),
               _run(runtime, mod.catch, KeyError)]
        with pytest.raises(ValueError, match="x"):
            _run(runtime, mod.fail, "x")
        return out
    assert scenario(native) == scenario(twin) == [9, 4, [0, 1, 2], ("KeyError", "KeyError")]


# --- delegation across modules -------------------------------------------------
#
# cypeer, a second Cython module, delegates to cyprobe's coroutines.  `await`
# takes any of them, as async def does.  `yield from` in a generator takes
# Cython's own coroutines, as a generator that types.coroutine() marked
# does (Cython cannot tell whether one did), and refuses an async def's, as
# stock Cython does.  References: for cyprobe's coroutines with native frames
# (another module's), cypeer's twin with its generator marked; for Cython's
# own coroutine type (cyprobe_stock) and for async def's, cypeer compiled
# without native frames.

def awaits(peer, source):
    async def main():
        return (await peer.await_it(source.add(2, 3)), await peer.await_it(source.chain(2)))
    return asyncio.run(main())


def yield_froms(peer, delegate, source):
    out = []

    async def main():
        return (await delegate(source.add(1, 2)), await delegate(source.chain(2)))
    try:
        out.append(asyncio.run(main()))
    except TypeError as e:
        return [("TypeError", str(e))]
    # send/throw/close go through the generator to the coroutine
    g = peer.delegate_to(source.catch(KeyError))
    out.append(g.send(None))                   # suspended in checkpoint()
    out.append(g.throw(KeyError("thrown")))    # caught, awaits again
    with pytest.raises(StopIteration) as e:
        g.send(None)
    out.append(e.value.value)
    c = source.add(1)
    g = peer.delegate_to(c)
    g.send(None)
    g.close()                                  # closes the coroutine too
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        c.send(None)
    out.append(list(g))
    return out


# (the refused async def coroutines are never awaited)
@pytest.mark.filterwarnings("ignore:coroutine 'add' was never awaited:RuntimeWarning")
def test_delegation_to_other_modules(modules):
    native_peer, stock_peer, twin_peer = (modules[k] for k in ("peer", "peer_stock", "peer_twin"))
    twin_delegate = types.coroutine(twin_peer.delegate_to)  # marks its code
    native_delegate = types.coroutine(native_peer.delegate_to)
    stock_delegate = types.coroutine(stock_peer.delegate_to)
    for source in ("twin", "native", "stock"):
        src = modules[source]
        assert awaits(native_peer, src) == awaits(twin_peer, src) == (5, 2), source
    accepted = [(3, 2), None, None, ("KeyError", "KeyError"), []]
    src = modules["native"]
    assert yield_froms(native_peer, native_delegate, src) == \
        yield_froms(twin_peer, twin_delegate, src) == accepted
    src = modules["stock"]
    assert yield_froms(native_peer, native_delegate, src) == \
        yield_froms(stock_peer, stock_delegate, src) == accepted
    src = modules["twin"]
    assert yield_froms(native_peer, native_delegate, src) == \
        yield_froms(stock_peer, stock_delegate, src) == \
        [("TypeError", "'coroutine' object is not iterable")]


# --- py-spy -------------------------------------------------------------------

PYSPY_CHILD = """
import asyncio, importlib.machinery, importlib.util, sys
path, name = sys.argv[2], sys.argv[3]
if path.endswith(".pyx"):
    loader = importlib.machinery.SourceFileLoader(name, path)
    spec = importlib.util.spec_from_loader(name, loader)
else:
    spec = importlib.util.spec_from_file_location(name, path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)

def blocked(_):
    print("ready", flush=True)
    sys.stdin.readline()       # until the parent has dumped the stack
    return "done"

print(asyncio.run(mod.call_blocked(blocked)), flush=True)
"""


@pytest.mark.skipif(bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
                    reason="py-spy 0.4.3 cannot read a free-threaded (3.13t) process "
                           "(benfred/py-spy#711)")
def test_pyspy_sees_the_native_frame(native, twin):
    """py-spy dump of a process blocked in a callback that a Cython
    coroutine calls: the coroutine's frame shows with its file, name and
    line, as the async def twin's does.  (A running native frame reports the
    line of its last await, or its def line: cyprobe.call_blocked calls on
    the line of its await.)"""
    import test_pyspy

    py_spy = test_pyspy.PY_SPY
    if not os.access(py_spy, os.X_OK):
        pytest.skip(f"no py-spy at {py_spy} (requirements-test.txt installs it)")

    def frames(mod, name):
        path = mod.__file__ if mod is not twin else PYX
        out = test_pyspy.dump(py_spy, "-", PYSPY_CHILD.replace("sys.argv[2], sys.argv[3]",
                                                                repr(path) + ", " + repr(name)))
        return [(fn, os.path.basename(file), line) for fn, file, line in test_pyspy.frame_lines(out)
                if os.path.basename(file).startswith("cyprobe")]

    seen = frames(native, "cyprobe")
    assert seen == frames(twin, "cyprobe_twin")
    assert [fn for fn, _, _ in seen] == ["call_blocked"]


# --- reference counts (debug build) ---------------------------------------------

@pytest.mark.skipif(not hasattr(sys, "gettotalrefcount"), reason="needs a --with-pydebug build")
@pytest.mark.parametrize("which", ["native", "twin"])
def test_no_reference_leaks(modules, which):
    mod = modules[which]

    def scenario():
        drive(mod.chain(3))
        list(mod.count(3))
        list(mod.delegate(2))
        drive(mod.aconsume(2))
        drive(mod.catch(KeyError))
        with pytest.raises(ValueError):
            drive(mod.fail("x"))
        g = mod.count(5)
        next(g)
        g.close()
        c = mod.add(1)
        c.send(None)
        c.close()

    for _ in range(5):
        scenario()
    gc.collect()
    before = sys.gettotalrefcount()
    for _ in range(100):
        scenario()
    gc.collect()
    leaked = sys.gettotalrefcount() - before
    # one leaked reference per scenario would show as 100
    assert leaked < 50, leaked
