//! `pycoro_harness`: a probe extension module that gives the Python test
//! suite native coroutines to drive.  Every function returns a true
//! coroutine (`type(c) is types.CoroutineType`) made by the `pycoro`
//! harness; this crate only wires Rust futures to Python names.
//!
//! Each function's `async def` twin, used by the differential tests, is
//! written in its doc comment.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pycoro::{NativeCoroutine, coroutine_def, py_await};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple, PyType};

mod frames;
mod generators;
mod loops;

pycoro::coroutine_fn! {
    /// `async def ready(value): return value`
    fn ready(value) {
        async move { Ok(value) }
    }
}

pycoro::coroutine_fn! {
    /// `async def pair(first, second): return (first, second)`
    fn pair(first, second) {
        async move { Python::attach(|py| Ok(PyTuple::new(py, [first, second])?.into_any().unbind())) }
    }
}

pycoro::coroutine_fn! {
    /// `async def nothing(): return None`
    fn nothing() {
        async move { Ok(Python::attach(|py| py.None())) }
    }
}

pycoro::coroutine_fn! {
    /// `async def call_first(f): f(); return "called"`: the whole body, not
    /// only its `async` block, runs at the first step, as an async def's.
    fn call_first(f) {
        let called = Python::attach(|py| f.call0(py).map(drop));
        async move {
            called?;
            Python::attach(|py| Ok(pyo3::types::PyString::new(py, "called").into_any().unbind()))
        }
    }
}

/// `async def fail(exc): raise exc`
#[pyfunction]
fn fail<'py>(py: Python<'py>, exc: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let err = PyErr::from_value(exc);
    NativeCoroutine::new(py, coroutine_def!("fail"), async move { Err(err) })
}

/// `async def yield_now(n):` `for _ in range(n): await asyncio.sleep(0)`,
/// `return n` (a bare yield each time).
#[pyfunction]
fn yield_now(py: Python<'_>, n: usize) -> PyResult<Bound<'_, PyAny>> {
    NativeCoroutine::new(py, coroutine_def!("yield_now"), async move {
        for _ in 0..n {
            pycoro::interruptible(pycoro::yield_now()).await?;
        }
        Python::attach(|py| Ok(n.into_pyobject(py)?.into_any().unbind()))
    })
}

/// `async def sleep(seconds, result=None): await asyncio.sleep(seconds);
/// return result`, but the wake-up comes from a Rust thread.
#[pyfunction]
#[pyo3(signature = (seconds, result = None))]
fn sleep(py: Python<'_>, seconds: f64, result: Option<Py<PyAny>>) -> PyResult<Bound<'_, PyAny>> {
    let duration = Duration::try_from_secs_f64(seconds)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    NativeCoroutine::new(py, coroutine_def!("sleep"), async move {
        pycoro::interruptible(pycoro::sleep(duration)).await?;
        Ok(result.unwrap_or_else(|| Python::attach(|py| py.None())))
    })
}

/// A Rust `panic!(msg)` inside the coroutine: `pyo3_runtime.PanicException`.
#[pyfunction]
#[pyo3(name = "panic")]
fn panic_(py: Python<'_>, msg: String) -> PyResult<Bound<'_, PyAny>> {
    NativeCoroutine::new(py, coroutine_def!("panic"), async move {
        if !msg.is_empty() {
            panic!("{msg}");
        }
        Ok(Python::attach(|py| py.None()))
    })
}

pycoro::coroutine_fn! {
    /// `async def await_(aw): return await aw`
    fn await_(aw) {
        async move { py_await(aw).await }
    }
}

/// `async def await_all(*aws): return [await aw for aw in aws]`
#[pyfunction]
#[pyo3(signature = (*awaitables))]
fn await_all<'py>(
    py: Python<'py>,
    awaitables: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let awaitables: Vec<Py<PyAny>> = awaitables.iter().map(Bound::unbind).collect();
    NativeCoroutine::new(py, coroutine_def!("await_all"), async move {
        let mut results = Vec::with_capacity(awaitables.len());
        for aw in awaitables {
            results.push(py_await(aw).await?);
        }
        Python::attach(|py| Ok(PyList::new(py, results)?.into_any().unbind()))
    })
}

/// `async def catch(aw, exc_type):` `try: return await aw`
/// `except exc_type as e: return e`
#[pyfunction]
fn catch<'py>(
    py: Python<'py>,
    awaitable: Py<PyAny>,
    exc_type: Bound<'py, PyType>,
) -> PyResult<Bound<'py, PyAny>> {
    let exc_type = exc_type.unbind();
    NativeCoroutine::new(py, coroutine_def!("catch"), async move {
        match py_await(awaitable).await {
            Ok(v) => Ok(v),
            Err(e) => caught(e, &exc_type),
        }
    })
}

/// `async def hold(obj): await asyncio.sleep(0); return obj`, with `obj`
/// owned by the coroutine's native state (visited by the GC).
#[pyfunction]
fn hold(py: Python<'_>, obj: Py<PyAny>) -> PyResult<Bound<'_, PyAny>> {
    NativeCoroutine::builder(coroutine_def!("hold"))
        .hold(obj)
        .build(py, async {
            pycoro::yield_now().await;
            Python::attach(|py| {
                pycoro::held(py, 0)
                    .ok_or_else(|| pyo3::exceptions::PySystemError::new_err("held object missing"))
            })
        })
}

/// Counts the [`DropProbe`]s dropped, i.e. futures whose `Drop` ran.
static DROPPED: AtomicUsize = AtomicUsize::new(0);

/// `except exc_type as e: return e`: the exception object if `err` is an
/// instance of `exc_type`, else `err` again (re-raised).
pub(crate) fn caught(err: PyErr, exc_type: &Py<PyType>) -> PyResult<Py<PyAny>> {
    Python::attach(|py| {
        if err.is_instance(py, exc_type.bind(py).as_any()) {
            Ok(err.into_value(py).into_any())
        } else {
            Err(err)
        }
    })
}

pub(crate) struct DropProbe;

impl Drop for DropProbe {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

/// `async def pending(): await asyncio.Future()` (never completes) whose
/// Rust future increments [`drops`] when dropped.
#[pyfunction]
fn pending(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let probe = DropProbe;
    NativeCoroutine::new(py, coroutine_def!("pending"), async move {
        let _probe = probe;
        std::future::pending::<()>().await;
        Ok(Python::attach(|py| py.None()))
    })
}

/// `guarded(aw)`: like `await_(aw)`, but its Rust future holds a drop probe.
#[pyfunction]
fn guarded(py: Python<'_>, awaitable: Py<PyAny>) -> PyResult<Bound<'_, PyAny>> {
    let probe = DropProbe;
    NativeCoroutine::new(py, coroutine_def!("guarded"), async move {
        let _probe = probe;
        py_await(awaitable).await
    })
}

/// How many Rust futures made by [`pending`] or [`guarded`] were dropped.
#[pyfunction]
fn drops() -> usize {
    DROPPED.load(Ordering::SeqCst)
}

/// One helper thread that wakes every waker it is sent, at once.
fn pinger() -> &'static Mutex<mpsc::Sender<Waker>> {
    static PINGER: OnceLock<Mutex<mpsc::Sender<Waker>>> = OnceLock::new();
    PINGER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Waker>();
        std::thread::Builder::new()
            .name("pycoro-pinger".into())
            .spawn(move || {
                for waker in rx {
                    waker.wake();
                }
            })
            .expect("cannot spawn the pinger thread");
        Mutex::new(tx)
    })
}

/// Pending once, woken by the pinger thread.
struct Ping(bool);

impl Future for Ping {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        let tx = pinger().lock().unwrap_or_else(|p| p.into_inner());
        tx.send(cx.waker().clone()).expect("pinger thread is gone");
        Poll::Pending
    }
}

/// `ping(n)`: suspends `n` times, each time woken from another Rust thread
/// (the cross-thread wake path; used by the benchmark).
#[pyfunction]
fn ping(py: Python<'_>, n: usize) -> PyResult<Bound<'_, PyAny>> {
    NativeCoroutine::new(py, coroutine_def!("ping"), async move {
        for _ in 0..n {
            Ping(false).await;
        }
        Python::attach(|py| Ok(n.into_pyobject(py)?.into_any().unbind()))
    })
}

/// The probe module.  It does not need the GIL: importing it into a
/// free-threaded interpreter leaves the GIL off (`sys._is_gil_enabled()`).
#[pymodule(gil_used = false)]
fn pycoro_harness(m: &Bound<'_, PyModule>) -> PyResult<()> {
    ready::add_to(m)?;
    m.add_function(wrap_pyfunction!(fail, m)?)?;
    m.add_function(wrap_pyfunction!(yield_now, m)?)?;
    m.add_function(wrap_pyfunction!(sleep, m)?)?;
    m.add_function(wrap_pyfunction!(panic_, m)?)?;
    await_::add_to(m)?;
    pair::add_to(m)?;
    nothing::add_to(m)?;
    call_first::add_to(m)?;
    m.add_function(wrap_pyfunction!(await_all, m)?)?;
    m.add_function(wrap_pyfunction!(catch, m)?)?;
    m.add_function(wrap_pyfunction!(hold, m)?)?;
    m.add_function(wrap_pyfunction!(pending, m)?)?;
    m.add_function(wrap_pyfunction!(guarded, m)?)?;
    m.add_function(wrap_pyfunction!(drops, m)?)?;
    m.add_function(wrap_pyfunction!(ping, m)?)?;
    frames::register(m)?;
    generators::register(m)?;
    loops::register(m)?;
    m.add(
        "PanicException",
        pycoro::panic::panic_exception_type(m.py())?,
    )?;
    Ok(())
}
