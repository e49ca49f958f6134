//! Native coroutines driven from an embedded (patched) interpreter, mostly
//! with bare `send(None)` loops, each compared with the same program
//! written as `async def` where Python can express it.

use std::ffi::CStr;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use pycoro::{NativeCoroutine, coroutine_def, py_await};
use pyo3::IntoPyObjectExt;
use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The tests share one interpreter, whose warning filters and GC are
/// process-wide: run them one at a time (taken before attaching).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run `code` with `vars` as globals; return the globals.
fn run<'py>(
    py: Python<'py>,
    code: &CStr,
    vars: &[(&str, &Bound<'py, PyAny>)],
) -> Bound<'py, PyDict> {
    let g = PyDict::new(py);
    for (k, v) in vars {
        g.set_item(k, v).unwrap();
    }
    py.run(code, Some(&g), None)
        .unwrap_or_else(|e| panic!("{}", e.display_and_message(py)));
    g
}

trait DisplayErr {
    fn display_and_message(&self, py: Python<'_>) -> String;
}

impl DisplayErr for PyErr {
    fn display_and_message(&self, py: Python<'_>) -> String {
        let tb = self
            .traceback(py)
            .and_then(|t| t.format().ok())
            .unwrap_or_default();
        format!("{tb}{}", self)
    }
}

fn none() -> Py<PyAny> {
    Python::attach(|py| py.None())
}

fn obj<'py, T: IntoPyObject<'py>>(py: Python<'py>, v: T) -> Py<PyAny> {
    v.into_py_any(py).unwrap()
}

const DRIVE: &CStr = c"
def drive(c, sent=None):
    '''Bare send(None) loop: (yields, result-or-exception).'''
    yields = []
    while True:
        try:
            yields.append(c.send(sent))
        except StopIteration as e:
            return yields, ('return', e.value)
        except BaseException as e:
            return yields, ('raise', e)
";

#[test]
fn is_a_true_coroutine_with_a_native_code_object() {
    let _serial = serial();
    Python::attach(|py| {
        let (def, line) = (coroutine_def!("native_ready"), line!());
        let coro = NativeCoroutine::new(py, def, async { Ok(none()) }).unwrap();
        let g = run(
            py,
            c"
import types, inspect, os
assert type(c) is types.CoroutineType, type(c)
assert inspect.iscoroutine(c)
assert inspect.isawaitable(c)
code = c.cr_code
assert code.co_flags & inspect.CO_COROUTINE
assert code.co_flags & 0x10000000, hex(code.co_flags)   # CO_NATIVE
assert code.co_name == 'native_ready', code.co_name
assert c.__name__ == 'native_ready' and c.__qualname__ == 'native_ready'
assert os.path.isabs(code.co_filename) and os.path.isfile(code.co_filename), code.co_filename
first = code.co_firstlineno
assert inspect.getcoroutinestate(c) == 'CORO_CREATED'
c.close()
assert inspect.getcoroutinestate(c) == 'CORO_CLOSED'
",
            &[("c", &coro)],
        );
        let first: u32 = g.get_item("first").unwrap().unwrap().extract().unwrap();
        assert_eq!(first, line);
        let filename: String = coro
            .getattr("cr_code")
            .unwrap()
            .getattr("co_filename")
            .unwrap()
            .extract()
            .unwrap();
        assert!(
            filename.ends_with("rust-harness/pycoro/tests/native_coroutines.rs"),
            "{filename}"
        );
    });
}

#[test]
fn ready_and_error_match_async_def() {
    let _serial = serial();
    Python::attach(|py| {
        let value = obj(py, "the value");
        let native_ok =
            NativeCoroutine::new(py, coroutine_def!("ok"), async move { Ok(value) }).unwrap();
        let exc = py.eval(c"ValueError('boom')", None, None).unwrap();
        let err = PyErr::from_value(exc.clone());
        let native_err =
            NativeCoroutine::new(py, coroutine_def!("err"), async move { Err(err) }).unwrap();
        run(
            py,
            &std::ffi::CString::new(format!(
                "{}\n{}",
                DRIVE.to_str().unwrap(),
                "
async def py_ok(): return 'the value'
async def py_err(): raise exc
assert drive(native_ok) == drive(py_ok()) == ([], ('return', 'the value')), drive(native_ok)
ys, (kind, e) = drive(native_err)
assert (ys, kind) == ([], 'raise') and e is exc, (ys, kind, e)
# the same object raised again by the Python twin gets the same treatment
ys2, (kind2, e2) = drive(py_err())
assert (ys2, kind2) == (ys, kind) and e2 is exc
"
            ))
            .unwrap(),
            &[
                ("native_ok", &native_ok),
                ("native_err", &native_err),
                ("exc", &exc),
            ],
        );
    });
}

#[test]
fn finished_coroutine_cannot_be_reused_like_async_def() {
    let _serial = serial();
    Python::attach(|py| {
        let native =
            NativeCoroutine::new(py, coroutine_def!("once"), async { Ok(none()) }).unwrap();
        run(
            py,
            c"
async def twin(): return None
msgs = []
for c in (native, twin()):
    try:
        c.send(None)
    except StopIteration:
        pass
    try:
        c.send(None)
    except RuntimeError as e:
        msgs.append(str(e))
assert msgs == ['cannot reuse already awaited coroutine'] * 2, msgs
",
            &[("native", &native)],
        );
    });
}

#[test]
fn yield_now_is_a_bare_yield() {
    let _serial = serial();
    Python::attach(|py| {
        let native = NativeCoroutine::new(py, coroutine_def!("yielder"), async {
            for _ in 0..3 {
                pycoro::yield_now().await;
            }
            Python::attach(|py| Ok(obj(py, 3)))
        })
        .unwrap();
        run(
            py,
            &std::ffi::CString::new(format!(
                "{}\n{}",
                DRIVE.to_str().unwrap(),
                "
import asyncio
async def twin():
    for _ in range(3):
        await asyncio.sleep(0)
    return 3
assert drive(native) == drive(twin()) == ([None] * 3, ('return', 3)), drive(native)
"
            ))
            .unwrap(),
            &[("native", &native)],
        );
    });
}

#[test]
fn py_await_drives_python_awaitables() {
    let _serial = serial();
    Python::attach(|py| {
        let g = run(
            py,
            c"
import types
@types.coroutine
def suspend(v):
    got = yield v
    return ('resumed with', got)
async def inner(v):
    return await suspend(v)
",
            &[],
        );
        let inner = g.get_item("inner").unwrap().unwrap();
        let aw = inner.call1(("first",)).unwrap().unbind();
        let native = NativeCoroutine::new(py, coroutine_def!("awaiter"), async move {
            let r = py_await(aw).await?;
            Ok(r)
        })
        .unwrap();
        run(
            py,
            c"
async def twin():
    return await inner('first')
for c in (native, twin()):
    assert c.send(None) == 'first'
    if c is native:
        assert c.cr_await is not None     # CPython drives the delegate
    try:
        c.send(42)
    except StopIteration as e:
        assert e.value == ('resumed with', 42), e.value
    else:
        raise AssertionError('did not finish')
",
            &[("native", &native), ("inner", &inner)],
        );
    });
}

#[test]
fn exceptions_of_awaited_objects_reach_the_future() {
    let _serial = serial();
    Python::attach(|py| {
        let g = run(py, c"async def boom(): raise KeyError('k')", &[]);
        let aw = g
            .get_item("boom")
            .unwrap()
            .unwrap()
            .call0()
            .unwrap()
            .unbind();
        let native = NativeCoroutine::new(py, coroutine_def!("catcher"), async move {
            match py_await(aw).await {
                Ok(_) => Ok(Python::attach(|py| obj(py, "no error"))),
                Err(e) => Python::attach(|py| {
                    assert!(e.is_instance_of::<pyo3::exceptions::PyKeyError>(py));
                    Ok(obj(py, format!("caught {}", e.value(py).repr().unwrap())))
                }),
            }
        })
        .unwrap();
        let err = native.call_method1("send", (py.None(),)).unwrap_err();
        assert!(err.is_instance_of::<PyStopIteration>(py));
        let v: String = err.value(py).getattr("value").unwrap().extract().unwrap();
        assert_eq!(v, "caught KeyError('k')");
    });
}

#[test]
fn throw_while_awaiting_python_is_delivered_and_can_be_caught() {
    let _serial = serial();
    Python::attach(|py| {
        let g = run(
            py,
            c"
import types
@types.coroutine
def once():
    yield 'suspended'
",
            &[],
        );
        let aw = g
            .get_item("once")
            .unwrap()
            .unwrap()
            .call0()
            .unwrap()
            .unbind();
        let native = NativeCoroutine::new(py, coroutine_def!("thrown_into"), async move {
            match py_await(aw).await {
                Ok(_) => Ok(Python::attach(|py| obj(py, "finished"))),
                Err(e) => Python::attach(|py| Ok(obj(py, format!("caught {}", e.value(py))))),
            }
        })
        .unwrap();
        run(
            py,
            c"
async def twin():
    try:
        await once()
        return 'finished'
    except ValueError as e:
        return f'caught {e}'
results = []
for c in (native, twin()):
    assert c.send(None) == 'suspended'
    try:
        c.throw(ValueError('thrown'))
    except StopIteration as e:
        results.append(e.value)
assert results == ['caught thrown'] * 2, results
",
            &[
                ("native", &native),
                ("once", &g.get_item("once").unwrap().unwrap()),
            ],
        );
    });
}

struct SetOnDrop(Arc<AtomicBool>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn close_and_throw_at_a_rust_await_drop_the_future() {
    let _serial = serial();
    Python::attach(|py| {
        for how in ["close", "throw"] {
            let dropped = Arc::new(AtomicBool::new(false));
            let guard = SetOnDrop(dropped.clone());
            let native = NativeCoroutine::new(py, coroutine_def!("sleeper"), async move {
                let _guard = guard;
                pycoro::sleep(Duration::from_secs(3600)).await;
                Ok(none())
            })
            .unwrap();
            // No loop runs: the first Pending is a bare yield.
            assert!(native.call_method1("send", (py.None(),)).unwrap().is_none());
            assert!(!dropped.load(Ordering::SeqCst));
            if how == "close" {
                assert!(native.call_method0("close").unwrap().is_none());
            } else {
                let exc = py.eval(c"ValueError('stop')", None, None).unwrap();
                let err = native.call_method1("throw", (&exc,)).unwrap_err();
                assert!(err.value(py).is(&exc), "the thrown object propagates");
            }
            assert!(
                dropped.load(Ordering::SeqCst),
                "{how}: the future was not dropped"
            );
            let state: String = py
                .import("inspect")
                .unwrap()
                .call_method1("getcoroutinestate", (&native,))
                .unwrap()
                .extract()
                .unwrap();
            assert_eq!(state, "CORO_CLOSED", "{how}");
        }
    });
}

#[test]
fn unawaited_coroutine_is_dropped_at_dealloc() {
    let _serial = serial();
    Python::attach(|py| {
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = SetOnDrop(dropped.clone());
        let native = NativeCoroutine::new(py, coroutine_def!("never"), async move {
            let _guard = guard;
            Ok(none())
        })
        .unwrap();
        // Only Python holds it from here on.
        let g = PyDict::new(py);
        g.set_item("native", native).unwrap();
        py.run(
            c"
import warnings, gc
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter('always')
    del native
    gc.collect()
msgs = [str(x.message) for x in w]
del w                   # a WarningMessage keeps its source (the coroutine)
gc.collect()
assert \"coroutine 'never' was never awaited\" in msgs, msgs
",
            Some(&g),
            None,
        )
        .unwrap_or_else(|e| panic!("{}", e.display_and_message(py)));
        assert!(dropped.load(Ordering::SeqCst));
    });
}

#[test]
fn panic_becomes_the_shared_panic_exception() {
    let _serial = serial();
    Python::attach(|py| {
        let native = NativeCoroutine::new(py, coroutine_def!("panicker"), async {
            if std::hint::black_box(true) {
                panic!("the harness caught this");
            }
            Ok(none())
        })
        .unwrap();
        let err = native.call_method1("send", (py.None(),)).unwrap_err();
        let ty = pycoro::panic::panic_exception_type(py).unwrap();
        assert!(err.is_instance(py, ty.as_any()));
        assert!(!err.is_instance_of::<pyo3::exceptions::PyException>(py));
        assert!(err.is_instance_of::<pyo3::exceptions::PyBaseException>(py));
        assert_eq!(err.value(py).to_string(), "the harness caught this");
        let shared = py
            .import("pyo3_runtime")
            .unwrap()
            .getattr("PanicException")
            .unwrap();
        assert!(shared.is(ty.as_any()));
        // The interpreter is fine and the coroutine is finished.
        let again = native.call_method1("send", (py.None(),)).unwrap_err();
        assert!(again.is_instance_of::<PyRuntimeError>(py));
    });
}

#[test]
fn asyncio_sleep_is_woken_from_a_rust_thread() {
    let _serial = serial();
    Python::attach(|py| {
        let native = NativeCoroutine::new(py, coroutine_def!("nap"), async {
            pycoro::sleep(Duration::from_millis(30)).await;
            Python::attach(|py| Ok(obj(py, "woke")))
        })
        .unwrap();
        let start = Instant::now();
        let g = run(
            py,
            c"
import asyncio
async def main():
    task = asyncio.ensure_future(native)
    ticks = 0
    while not task.done():          # the loop keeps running other work
        ticks += 1
        await asyncio.sleep(0.005)
    return await task, ticks
result, ticks = asyncio.run(main())
assert result == 'woke', result
",
            &[("native", &native)],
        );
        assert!(start.elapsed() >= Duration::from_millis(30));
        let ticks: u32 = g.get_item("ticks").unwrap().unwrap().extract().unwrap();
        assert!(ticks >= 2, "the loop was blocked: {ticks} ticks");
    });
}

#[test]
fn asyncio_cancel_during_rust_sleep_cancels_and_drops() {
    let _serial = serial();
    Python::attach(|py| {
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = SetOnDrop(dropped.clone());
        let native = NativeCoroutine::new(py, coroutine_def!("long_nap"), async move {
            let _guard = guard;
            pycoro::sleep(Duration::from_secs(3600)).await;
            Ok(none())
        })
        .unwrap();
        run(
            py,
            c"
import asyncio
async def main():
    task = asyncio.ensure_future(native)
    await asyncio.sleep(0.01)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return 'cancelled'
    return 'not cancelled'
assert asyncio.run(main()) == 'cancelled'
",
            &[("native", &native)],
        );
        assert!(dropped.load(Ordering::SeqCst));
    });
}

#[test]
fn bare_send_loop_polls_until_the_thread_wakes() {
    let _serial = serial();
    Python::attach(|py| {
        let native = NativeCoroutine::new(py, coroutine_def!("busy"), async {
            pycoro::sleep(Duration::from_millis(10)).await;
            Python::attach(|py| Ok(obj(py, "done")))
        })
        .unwrap();
        let g = run(
            py,
            &std::ffi::CString::new(format!(
                "{}\nys, r = drive(native)\nassert r == ('return', 'done'), r\nassert set(ys) == {{None}}\n",
                DRIVE.to_str().unwrap()
            ))
            .unwrap(),
            &[("native", &native)],
        );
        drop(g);
    });
}

/// Polls two futures in one poll (a minimal `join`).
struct Join2<A: Future, B: Future>(Pin<Box<A>>, Pin<Box<B>>, Option<B::Output>);
impl<A: Future, B: Future<Output: Unpin>> Future for Join2<A, B> {
    type Output = (A::Output, Option<B::Output>);
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // `a` first: it registers its awaitable, `b` is refused at once.
        let a = self.0.as_mut().poll(cx);
        if self.2.is_none() {
            if let Poll::Ready(b) = self.1.as_mut().poll(cx) {
                self.2 = Some(b);
            }
        }
        match a {
            Poll::Ready(a) => Poll::Ready((a, self.2.take())),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[test]
fn two_python_awaits_at_once_are_refused() {
    let _serial = serial();
    Python::attach(|py| {
        let g = run(py, c"async def value(v): return v", &[]);
        let f = g.get_item("value").unwrap().unwrap();
        let a = f.call1((1,)).unwrap().unbind();
        let b = f.call1((2,)).unwrap().unbind();
        let native = NativeCoroutine::new(py, coroutine_def!("joiner"), async move {
            let (first, second) = Join2(Box::pin(py_await(a)), Box::pin(py_await(b)), None).await;
            let second = second.expect("second resolved in the same poll");
            Python::attach(|py| {
                assert!(second.unwrap_err().is_instance_of::<PyRuntimeError>(py));
            });
            first
        })
        .unwrap();
        let err = native.call_method1("send", (py.None(),)).unwrap_err();
        assert!(err.is_instance_of::<PyStopIteration>(py));
        // `b` was refused, `a` was awaited.
        let v: i64 = err.value(py).getattr("value").unwrap().extract().unwrap();
        assert_eq!(v, 1);
    });
}

#[test]
fn py_await_outside_a_native_coroutine_fails() {
    let _serial = serial();
    Python::attach(|py| {
        let mut fut = Box::pin(py_await(py.None()));
        let mut cx = Context::from_waker(Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(Err(e)) => assert!(e.is_instance_of::<PyRuntimeError>(py)),
            _ => panic!("expected an error"),
        }
    });
}

#[test]
fn held_objects_are_visible_to_the_gc() {
    let _serial = serial();
    Python::attach(|py| {
        let g = run(py, c"class Box: pass\nbox = Box()", &[]);
        let boxed = g.get_item("box").unwrap().unwrap();
        g.del_item("box").unwrap();
        let native = NativeCoroutine::builder(coroutine_def!("holder"))
            .hold(boxed.clone().unbind())
            .build(py, async {
                pycoro::yield_now().await;
                Python::attach(|py| Ok(pycoro::held(py, 0).unwrap()))
            })
            .unwrap();
        // Only Python holds them from here on.
        let g = PyDict::new(py);
        g.set_item("box", boxed).unwrap();
        g.set_item("native", native).unwrap();
        py.run(
            c"
import gc, weakref, warnings
box.coro = native                 # a cycle: box -> coroutine -> (state) box
ref = weakref.ref(box)
del box, native
with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    gc.collect()
assert ref() is None, 'the cycle through the native state was not collected'
",
            Some(&g),
            None,
        )
        .unwrap_or_else(|e| panic!("{}", e.display_and_message(py)));
        // The other way round: the coroutine gives the object back.
        let b2 = py.eval(c"object()", None, None).unwrap();
        let native = NativeCoroutine::builder(coroutine_def!("holder2"))
            .hold(b2.clone().unbind())
            .build(py, async {
                pycoro::yield_now().await;
                Python::attach(|py| Ok(pycoro::held(py, 0).unwrap()))
            })
            .unwrap();
        assert!(native.call_method1("send", (py.None(),)).unwrap().is_none());
        let err = native.call_method1("send", (py.None(),)).unwrap_err();
        assert!(err.value(py).getattr("value").unwrap().is(&b2));
    });
}

#[test]
fn the_frame_reports_the_line_of_the_current_await() {
    let _serial = serial();
    Python::attach(|py| {
        let g = run(
            py,
            c"import types\n@types.coroutine\ndef once():\n    yield",
            &[],
        );
        let aw = g
            .get_item("once")
            .unwrap()
            .unwrap()
            .call0()
            .unwrap()
            .unbind();
        let await_line = std::sync::atomic::AtomicU32::new(0);
        let await_line = Arc::new(await_line);
        let l2 = await_line.clone();
        let native = NativeCoroutine::new(py, coroutine_def!("liner"), async move {
            l2.store(line!() + 1, Ordering::SeqCst);
            py_await(aw).await
        })
        .unwrap();
        native.call_method1("send", (py.None(),)).unwrap();
        let lineno: u32 = native
            .getattr("cr_frame")
            .unwrap()
            .getattr("f_lineno")
            .unwrap()
            .extract()
            .unwrap();
        assert_eq!(lineno, await_line.load(Ordering::SeqCst));
        native.call_method0("close").unwrap();
    });
}

/// The line stored into the frame's line slot while the step runs (the
/// `NativeCoroutine::new` line, then `located`'s, no `lines::here()`) is
/// what Python code called from the step reads as its caller's line:
/// CPython reads the slot when the line of the running frame is asked for.
#[test]
fn python_called_mid_step_reads_the_line_slot() {
    let _serial = serial();
    Python::attach(|py| {
        let g = run(
            py,
            c"import sys\ndef caller_line():\n    return sys._getframe(1).f_lineno",
            &[],
        );
        let f = g.get_item("caller_line").unwrap().unwrap().unbind();
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let created = line!() + 1;
        let native = NativeCoroutine::new(py, coroutine_def!("slot_liner"), async move {
            let call = || Python::attach(|py| f.call0(py)?.extract::<u32>(py));
            let at_start = call()?;
            let first = line!() + 1;
            let in_first = pycoro::located(async { call() }).await?;
            let second = line!() + 1;
            let in_second = pycoro::located(async { call() }).await?;
            *l2.lock().unwrap() = vec![(at_start, created), (in_first, first), (in_second, second)];
            Ok(Python::attach(|py| py.None()))
        })
        .unwrap();
        let stop = native.call_method1("send", (py.None(),)).unwrap_err();
        assert!(stop.is_instance_of::<PyStopIteration>(py), "{stop}");
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 3);
        for &(seen, expected) in lines.iter() {
            assert_eq!(seen, expected, "{lines:?}");
        }
    });
}

#[test]
fn errors_from_the_future_keep_cause_and_context() {
    let _serial = serial();
    Python::attach(|py| {
        let g = run(
            py,
            c"
try:
    try:
        raise KeyError('inner')
    except KeyError as k:
        raise ValueError('outer') from k
except ValueError as v:
    exc = v
",
            &[],
        );
        let exc = g.get_item("exc").unwrap().unwrap();
        let err = PyErr::from_value(exc.clone());
        let native =
            NativeCoroutine::new(py, coroutine_def!("chained"), async move { Err(err) }).unwrap();
        let got = native.call_method1("send", (py.None(),)).unwrap_err();
        assert!(got.value(py).is(&exc));
        assert!(
            got.value(py)
                .getattr("__cause__")
                .unwrap()
                .is_instance_of::<pyo3::exceptions::PyKeyError>()
        );
    });
}

struct PanicOnDrop;
impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("panic in Drop");
    }
}

#[test]
fn a_panicking_drop_is_reported_as_unraisable() {
    let _serial = serial();
    Python::attach(|py| {
        let native = NativeCoroutine::new(py, coroutine_def!("bad_drop"), async {
            let _bomb = PanicOnDrop;
            pycoro::yield_now().await;
            Ok(none())
        })
        .unwrap();
        run(
            py,
            c"
import sys
seen = []
old, sys.unraisablehook = sys.unraisablehook, lambda u: seen.append(u.exc_value)
try:
    native.send(None)
    native.close()              # drops the future: its Drop panics
finally:
    sys.unraisablehook = old
assert len(seen) == 1, seen
assert type(seen[0]).__name__ == 'PanicException', seen
assert str(seen[0]) == 'panic in Drop', seen
assert sys.modules['pyo3_runtime'].PanicException is type(seen[0])
",
            &[("native", &native)],
        );
    });
}
