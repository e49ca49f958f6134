//! Probes for the native frame as Python sees it: lines, tracebacks,
//! stacks, monitoring and profilers (`tests/test_frames.py`,
//! `tests/test_monitoring.py`, `tests/test_pyspy.py`).
//!
//! Each function's `async def` twin is in its doc comment.  Lines the tests
//! look for are marked with a `// @line <tag>` comment at the end of the
//! line, so the tests read the expected Rust line from this file instead of
//! hard-coding it.

use pycoro::{LineExt, NativeCoroutine, coroutine_def, lines, py_await};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// `async def call(cb, *args): return cb(*args)`: calls Python from
/// inside the step, so `cb` sees the native frame as its caller.
#[pyfunction]
#[pyo3(signature = (callback, *args))]
pub fn call<'py>(
    py: Python<'py>,
    callback: Py<PyAny>,
    args: Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let args = args.unbind();
    NativeCoroutine::new(py, coroutine_def!("call"), async move {
        Python::attach(|py| {
            lines::here(); // @line call
            callback.call1(py, args.bind(py))
        })
    })
}

/// ```python
/// async def await_then_call(aw, cb):
///     v = await aw
///     return cb(v)
/// ```
#[pyfunction]
pub fn await_then_call(
    py: Python<'_>,
    awaitable: Py<PyAny>,
    callback: Py<PyAny>,
) -> PyResult<Bound<'_, PyAny>> {
    NativeCoroutine::new(py, coroutine_def!("await_then_call"), async move {
        let v = py_await(awaitable).await.at_line()?; // @line await_then_call.await
        Python::attach(|py| {
            lines::here(); // @line await_then_call.call
            callback.call1(py, (v,))
        })
    })
}

/// `async def raise_value_error(msg): raise ValueError(msg)`
#[pyfunction]
pub fn raise_value_error(py: Python<'_>, msg: String) -> PyResult<Bound<'_, PyAny>> {
    NativeCoroutine::new(py, coroutine_def!("raise_value_error"), async move {
        lines::raise(pyo3::exceptions::PyValueError::new_err(msg)) // @line raise_value_error
    })
}

/// ```python
/// async def two_yields():
///     await asyncio.sleep(0)
///     await asyncio.sleep(0)
///     return 2
/// ```
#[pyfunction]
pub fn two_yields(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    NativeCoroutine::new(py, coroutine_def!("two_yields"), async move {
        pycoro::yield_now().await; // @line two_yields.1
        pycoro::yield_now().await; // @line two_yields.2
        Python::attach(|py| Ok(2i32.into_pyobject(py)?.into_any().unbind()))
    })
}

/// Register the probes of this module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(call, m)?)?;
    m.add_function(wrap_pyfunction!(await_then_call, m)?)?;
    m.add_function(wrap_pyfunction!(raise_value_error, m)?)?;
    m.add_function(wrap_pyfunction!(two_yields, m)?)?;
    Ok(())
}
