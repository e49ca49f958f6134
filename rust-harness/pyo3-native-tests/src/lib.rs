//! `async fn`s wrapped by the patched PyO3, and the helpers its tests share
//! (see `Cargo.toml`): each test file is its own process, so that the ones
//! that change what is found on first use (the native frames API, the
//! shared `PanicException`) start from a fresh interpreter.
#![allow(missing_docs)]

use std::ffi::CString;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use pyo3::coroutine::{CancelHandle, await_py};
use pyo3::exceptions::{PyAssertionError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The line of `async fn ready` (checked against `co_firstlineno`).
pub const READY_LINE: u32 = line!() + 2;
#[pyfunction]
pub async fn ready(value: Py<PyAny>) -> Py<PyAny> {
    value
}

/// A future completed by a Rust thread after `seconds`.
pub fn thread_sleep(seconds: f64) -> impl std::future::Future<Output = ()> + Send {
    let shared: Arc<Mutex<(bool, Option<Waker>, bool)>> = Arc::default();
    std::future::poll_fn(move |cx| {
        let mut s = shared.lock().unwrap();
        if s.0 {
            return Poll::Ready(());
        }
        s.1 = Some(cx.waker().clone());
        if !s.2 {
            s.2 = true;
            let shared = shared.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs_f64(seconds));
                let waker = {
                    let mut s = shared.lock().unwrap();
                    s.0 = true;
                    s.1.take()
                };
                if let Some(w) = waker {
                    w.wake();
                }
            });
        }
        Poll::Pending
    })
}

#[pyfunction]
pub async fn sleep(seconds: f64, value: Py<PyAny>) -> Py<PyAny> {
    thread_sleep(seconds).await;
    value
}

/// The line of `async fn fail`.
pub const FAIL_LINE: u32 = line!() + 2;
#[pyfunction]
pub async fn fail(message: String) -> PyResult<()> {
    Err(PyValueError::new_err(message))
}

/// The line of the `await_py` call in `await_it`.
pub const AWAIT_IT_LINE: u32 = line!() + 3;
#[pyfunction]
pub async fn await_it(awaitable: Py<PyAny>) -> PyResult<Py<PyAny>> {
    await_py(awaitable).await
}

/// Awaits, and on an exception raises `ValueError("wrapped")` (chained,
/// as `raise` in an `except` block does).
#[pyfunction]
pub async fn await_and_wrap(awaitable: Py<PyAny>) -> PyResult<Py<PyAny>> {
    match await_py(awaitable).await {
        Ok(v) => Ok(v),
        Err(_) => Err(PyValueError::new_err("wrapped")),
    }
}

/// Awaits twice, adding the results.
#[pyfunction]
pub async fn await_twice(a: Py<PyAny>, b: Py<PyAny>) -> PyResult<Py<PyAny>> {
    let x = await_py(a).await?;
    let y = await_py(b).await?;
    Python::attach(|py| Ok(x.bind(py).add(y.bind(py))?.unbind()))
}

/// A value aligned to 64 bytes (more than the 16 of a native state).
#[repr(align(64))]
struct Aligned(u8);

/// `await_it` holding a 64-byte aligned value across the await: a future
/// more aligned than the native state, which the backend keeps boxed.
/// Raises `AssertionError` if the value is misaligned or changed after the
/// await.
#[pyfunction]
pub async fn await_aligned(awaitable: Py<PyAny>) -> PyResult<Py<PyAny>> {
    let held = Aligned(7);
    let value = await_py(awaitable).await?;
    let held = std::hint::black_box(&held);
    if (held as *const Aligned as usize) % 64 != 0 || held.0 != 7 {
        return Err(PyAssertionError::new_err("the held value moved or changed"));
    }
    Ok(value)
}

#[pyfunction]
pub async fn panic(message: String) {
    panic!("{message}");
}

#[pyfunction]
pub async fn cancellable(seconds: f64, #[pyo3(cancel_handle)] mut cancel: CancelHandle) -> usize {
    let sleep = std::pin::pin!(thread_sleep(seconds));
    let mut sleep = sleep;
    std::future::poll_fn(|cx| {
        if cancel.poll_cancelled(cx).is_ready() {
            return Poll::Ready(0);
        }
        sleep.as_mut().poll(cx).map(|()| 42)
    })
    .await
}

#[pyclass]
pub struct Counter {
    pub count: usize,
}

#[pymethods]
impl Counter {
    #[new]
    fn new() -> Self {
        Counter { count: 0 }
    }

    async fn incr(&mut self, by: usize) -> usize {
        self.count += by;
        self.count
    }
}

/// The functions above in a dict, plus `native` (whether the native frames
/// API was found).
pub fn namespace(py: Python<'_>) -> Bound<'_, PyDict> {
    let ns = PyDict::new(py);
    let add = |name: &str, f: Bound<'_, PyAny>| ns.set_item(name, f).unwrap();
    add("ready", wrap_pyfunction!(ready, py).unwrap().into_any());
    add("sleep", wrap_pyfunction!(sleep, py).unwrap().into_any());
    add("fail", wrap_pyfunction!(fail, py).unwrap().into_any());
    add(
        "await_it",
        wrap_pyfunction!(await_it, py).unwrap().into_any(),
    );
    add(
        "await_and_wrap",
        wrap_pyfunction!(await_and_wrap, py).unwrap().into_any(),
    );
    add(
        "await_twice",
        wrap_pyfunction!(await_twice, py).unwrap().into_any(),
    );
    add(
        "await_aligned",
        wrap_pyfunction!(await_aligned, py).unwrap().into_any(),
    );
    add("panic", wrap_pyfunction!(panic, py).unwrap().into_any());
    add(
        "cancellable",
        wrap_pyfunction!(cancellable, py).unwrap().into_any(),
    );
    add("Counter", py.get_type::<Counter>().into_any());
    ns.set_item("native", pycoro_ffi::api().is_some()).unwrap();
    ns.set_item("READY_LINE", READY_LINE).unwrap();
    ns.set_item("FAIL_LINE", FAIL_LINE).unwrap();
    ns.set_item("AWAIT_IT_LINE", AWAIT_IT_LINE).unwrap();
    ns.set_item("SOURCE", concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs"))
        .unwrap();
    ns
}

/// Run `code` (dedented) with the namespace; panics with the Python
/// traceback on failure.
pub fn run(py: Python<'_>, code: &str) {
    let ns = namespace(py);
    let code = CString::new(pyo3::impl_::unindent::unindent(code)).unwrap();
    if let Err(e) = py.run(&code, Some(&ns), None) {
        e.print(py);
        panic!("the Python test failed: {e}");
    }
}
